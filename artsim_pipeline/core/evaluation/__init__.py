"""Retrieval evaluation of the collection (plain Python, no Dagster), by concern:

* :mod:`.protocol`: the leave-one-out protocol (relevance, methods, per-query metrics);
* :mod:`.ablations`: which vector set (model, fusion step, tap set) retrieves best;
* :mod:`.pixels`: pixel RMSE/SSIM of the top results against random pairs;
* :mod:`.learned`: the learned similarity head on held-out artists;
* :mod:`.checks`: variant inputs, full vs face crop, served index vs exact search, examples;
* :mod:`.run`: :func:`evaluate_collection`, everything above in order, as one report.

The metric rules live in :mod:`artsim_pipeline.core.metrics`, the metadata score and re-ranking
order in :mod:`artsim_pipeline.core.scoring`.
"""

from .ablations import TAP_SET_NAMES, ablation_sets, concat_l2, tap_set_ablations
from .checks import VariantInput, face_comparison, fused_vectors, index_check_rows
from .learned import EVAL_EPOCHS, SPLIT_SEEDS, evaluate_learned, heldout_artists, split_rows, splittable_artists
from .pixels import GrayCache, PixelResult, load_gray, pixel_evaluation, pixel_rmse, pixel_ssim
from .protocol import (
    DEFAULT_KS,
    METHODS,
    RELEVANCES,
    ItemMeta,
    MethodResult,
    evaluate_method,
    method_weights,
    random_rows,
    ranked_rows,
    relevant_counts,
    relevant_rows,
)
from .run import (
    CURVE_KS,
    HEADLINE,
    RANDOM_WEIGHTS_WARNING,
    EvaluationResult,
    evaluate_collection,
    fingerprint,
    report_fingerprint,
)

__all__ = [
    "CURVE_KS", "DEFAULT_KS", "EVAL_EPOCHS", "HEADLINE", "METHODS", "RANDOM_WEIGHTS_WARNING", "RELEVANCES",
    "SPLIT_SEEDS", "TAP_SET_NAMES", "EvaluationResult", "GrayCache", "ItemMeta", "MethodResult", "PixelResult",
    "VariantInput", "ablation_sets", "concat_l2", "evaluate_collection", "evaluate_learned", "evaluate_method",
    "face_comparison", "fingerprint", "fused_vectors", "heldout_artists", "index_check_rows", "load_gray",
    "method_weights", "pixel_evaluation", "pixel_rmse", "pixel_ssim", "random_rows", "ranked_rows",
    "relevant_counts", "relevant_rows", "report_fingerprint", "split_rows", "splittable_artists",
    "tap_set_ablations",
]
