"""Retrieval evaluation of the collection (plain Python, no Dagster), by concern:

* :mod:`.protocol`: the leave-one-out protocol (relevance, methods, per-query metrics);
* :mod:`.sampling`: which paintings query (all up to 5,000 eligible, else a seeded sample of 2,000);
* :mod:`.ranks`: the rankings the protocol needs without sorting each query's whole ranking;
* :mod:`.neighbours`: the leave-one-out's database side, its IVF neighbour search grouped by list;
* :mod:`.ablations`: which vector set (model, fusion step, tap set) retrieves best;
* :mod:`.pixels`: pixel RMSE/SSIM of the top results against random pairs;
* :mod:`.learned`: the learned similarity head on held-out artists;
* :mod:`.checks`: variant inputs, full vs face crop, served index vs exact search, examples;
* :mod:`.run`: :func:`evaluate` (one :class:`EvaluationRequest`: the collection and the options), everything
  above in order, as one report; :func:`evaluate_collection` takes the request's fields as arguments.

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
    evaluate_methods,
    method_weights,
    random_rows,
    ranked_rows,
    relevant_counts,
    relevant_rows,
)
from .sampling import FULL_UP_TO, SAMPLE_SIZE, QuerySample, splitmix64
from .run import (
    CURVE_KS,
    HEADLINE,
    RANDOM_WEIGHTS_WARNING,
    EvaluationRequest,
    EvaluationResult,
    evaluate,
    evaluate_collection,
    fingerprint,
    report_fingerprint,
)

__all__ = [
    "CURVE_KS", "DEFAULT_KS", "EVAL_EPOCHS", "FULL_UP_TO", "HEADLINE", "METHODS", "RANDOM_WEIGHTS_WARNING", "RELEVANCES",
    "SPLIT_SEEDS", "TAP_SET_NAMES", "EvaluationRequest", "EvaluationResult", "GrayCache", "ItemMeta", "MethodResult", "PixelResult",
    "QuerySample", "SAMPLE_SIZE", "VariantInput", "ablation_sets", "concat_l2", "evaluate", "evaluate_collection", "evaluate_learned", "evaluate_method", "evaluate_methods",
    "face_comparison", "fingerprint", "fused_vectors", "heldout_artists", "index_check_rows", "load_gray",
    "method_weights", "pixel_evaluation", "pixel_rmse", "pixel_ssim", "random_rows", "ranked_rows",
    "relevant_counts", "relevant_rows", "report_fingerprint", "split_rows", "splitmix64", "splittable_artists",
    "tap_set_ablations",
]
