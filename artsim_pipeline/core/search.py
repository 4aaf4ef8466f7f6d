"""Query API: find the paintings of the collection most similar to an image or to a painting.

Plain Python (no Dagster). A :class:`SearchEngine` is loaded once from a data lake built by
``artsim run`` (catalog, fusion models, FAISS indexes: :mod:`~artsim_pipeline.core.search_loaders`)
and the backbones the index was built with; each :meth:`SearchEngine.search` then runs:

1. **query** — an image (a file path, ``bytes`` or a PIL image) or an objectid of the collection
   (an ``int`` or a numeric string; a string naming an existing file is always an image):
   :mod:`~artsim_pipeline.core.search_query`;
2. **face crop** (``face_crop=True``) — MTCNN (:class:`~artsim_pipeline.core.faces.FaceDetector`
   with the settings' threshold and margin) gives the crop box; the ``face`` fusion and index are
   used. No face found, or no face index in the lake: the whole image and the ``full`` variant are
   used and a note says so;
3. **embedding** — every model's vector with exactly the collection's preprocessing, then the
   variant's fusion transform (standardise, PCA, L2): :mod:`~artsim_pipeline.core.search_encode`.
   An objectid query instead uses its stored fused vector, read back from the FAISS index (the
   same vector the collection was indexed with; re-embedding its cached image gives it again);
   a painting of the catalog that is not in the index is re-embedded from its cached image;
4. **filters** (artist, style, medium, year range) select the allowed objectids in DuckDB, before
   any ranking (rules: :mod:`~artsim_pipeline.core.search_filters`); the index search is then
   restricted to them;
5. **candidates** — the FAISS top ``candidate_factor · k`` (3·k) by cosine similarity (``visual``);
   with re-ranking on (``ARTSIM_RERANK``, :mod:`~artsim_pipeline.core.rerank`) the top
   ``max(100, 3·k)`` by cosine are re-scored (α-query expansion over the augmented vectors stored with
   the index) and the best ``3·k`` of them go on, their re-ranked score as ``visual``;
6. **hybrid re-rank** — ``final = 0.7 · visual + 0.3 · metadata`` with
   :func:`~artsim_pipeline.core.scoring.rerank`. The metadata score compares each candidate's
   catalog row with the *query's* row, so it exists only for an objectid query; an image query
   has no metadata: its ``final`` is its visual score and the order is the visual one;
7. **explanations** — each of the top ``k`` gets what agreed, per backbone and tap depth, in words, plus the
   metadata bonuses that applied (None when the served generation has none). Stages 6 and 7 and the
   results' rows: :mod:`~artsim_pipeline.core.search_present`.

The ranked paintings come back as a :class:`~artsim_pipeline.core.search_results.SearchResponse`
(fields: :mod:`~artsim_pipeline.core.search_results`). An objectid query leaves the painting itself out
(``include_self=True`` keeps it); another painting whose cosine with it is at near-duplicate level (another image
of the same work) stays, labelled ``near_duplicate``. An image query's match is its visual score (it has no
catalog data; ``match_basis`` says so in words), and it is *identified* (``identified``/``identification``):
whether it shows a painting of the collection, against the calibration stored with the generation
(:mod:`~artsim_pipeline.core.search_identify`, :mod:`~artsim_pipeline.core.identify`).

Models: the index is the truth. The engine embeds queries with the models recorded in the ``full``
fusion (:attr:`SearchEngine.model_names`, in the index's order), whatever the settings' default
``models`` are; when those differ, :attr:`SearchEngine.notes` says which models are used. Only an
*explicit* choice (``ARTSIM_MODELS`` set, see :func:`models_set_in_env`) naming another set of
models than the index is an error.

Errors the user can fix (a missing or unreadable file, an unknown objectid, a lake without an
index, an explicit ``ARTSIM_MODELS`` the index was not built with) raise
:class:`~artsim_pipeline.core.search_query.QueryError` (or its
:class:`~artsim_pipeline.core.search_query.IndexNotBuiltError`) with a message naming the input.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import UnidentifiedImageError

from .faces import FaceDetector
from .fusion import block_models, transform
from .index import search as index_search
from .rerank import RerankOptions, ServedDatabase
from .identify import Calibration, load_calibration
from .photo_match import KeypointCache
from .scoring import ScoringWeights
from .search_encode import detect_query_faces, forward_inputs, prepare_inputs, stored_vector
from .search_filters import SearchFilters, allowed_ids, removal_report
from .search_identify import identify_views, near_duplicate_level, open_image
from .search_present import present_results, stored_projection
from .search_query import ParsedQuery, Query, QueryError, parse_query
from .blas import blas_controller, one_blas_thread
from .search_loaders import catalog_database, catalog_rows, load_catalog, load_checked_models, load_variants
from .search_results import IMAGE_MATCH_BASIS, SearchResponse, SearchResult, cell_text, hybrid_match_basis
from .lake import DataLake, lake_for
from .model_thread import run_here

if TYPE_CHECKING:
    from .models import LoadedModel

log = logging.getLogger(__name__)


def models_set_in_env(environ: Any = None) -> bool:
    """True when ``ARTSIM_MODELS`` is set (non-empty) in ``environ`` (default ``os.environ``): an explicit choice."""
    env = os.environ if environ is None else environ
    return bool((env.get("ARTSIM_MODELS") or "").strip())


class SearchEngine:
    """Everything a query needs, loaded once: catalog, fusion + index per variant, backbones.

    ``models=None`` (the default) uses the models the index was built with; a list of names must
    name the same set as the index (order does not matter: the index's order is used) or
    :class:`QueryError` is raised. :attr:`notes` holds remarks about how the engine was set up
    (e.g. that it uses the index's models rather than the settings' defaults).
    """

    def __init__(
        self,
        lake: DataLake | Path | str,
        models: Sequence[str] | None = None,
        weights: str = "pretrained",
        device: str = "auto",
        *,
        face_threshold: float = 0.90,
        face_margin: float = 0.10,
        face_max_side: int = 1024,
        precision: str = "fp32",
        scoring: ScoringWeights = ScoringWeights(),
        rerank: RerankOptions = RerankOptions(),
        preload_models: bool = True,
        model_runner: Callable[[Callable[[], Any]], Any] = run_here,
    ) -> None:
        started = time.perf_counter()
        #: runs each model call (loading, forward passes, face detection): where it is made by default; the web
        #: server passes a :class:`~artsim_pipeline.core.model_thread.ModelThread` (one thread for torch)
        self._run_model = model_runner
        self.lake = lake if isinstance(lake, DataLake) else DataLake(Path(lake))
        self.scoring = scoring
        self.face_threshold = face_threshold
        self.face_margin = face_margin
        self.face_max_side = face_max_side
        self._device_name, self._device = device, None
        if device not in ("auto", "cpu"):
            _ = self.device  # an explicit accelerator this machine lacks is an error up front, as before
        self.generation, self.variants = load_variants(self.lake)  # the index generation served, its variants
        self.rerank = rerank
        self._databases = {name: ServedDatabase(v.bundle) for name, v in self.variants.items()}
        # identification (core/identify.py): stored with the generation; None for an older one (a note says so)
        self.calibration: Calibration | None
        self.calibration, self.calibration_note = load_calibration(self.lake, self.generation)
        self.painting_keypoints = KeypointCache(self._open_image)  # geometric verification's candidates
        if models is not None and set(models) != set(self.model_names):
            raise QueryError(
                f"the index in {self.lake.index_dir} was built with models {','.join(self.model_names)} "
                f"but ARTSIM_MODELS names {','.join(models)}; unset ARTSIM_MODELS to use the index's models, "
                f"set it to {','.join(self.model_names)}, or re-run the pipeline with the new models"
            )
        self.notes: list[str] = []
        self.catalog = load_catalog(self.lake, self.notes)
        self._rows: dict[int, dict[str, Any]] = catalog_rows(self.catalog)
        self._db = catalog_database(self.catalog)
        self._init_lock = threading.Lock()  # models and the face detector are loaded once, by one thread
        self._weights, self._default_precision = weights, precision
        self._models: list[LoadedModel] | None = None
        self.precision = precision
        self._detector: FaceDetector | None = None
        self._blas = blas_controller()
        if preload_models:
            self.load_models()
        self.load_seconds = time.perf_counter() - started

    @classmethod
    def from_settings(cls, settings: Any, *, models_explicit: bool = False, **overrides: Any) -> "SearchEngine":
        """An engine for :class:`~artsim_pipeline.config.Settings` (data lake, weights, device, faces).

        The models are the index's. ``settings.models`` is checked against them only when
        ``models_explicit`` (the user set ``ARTSIM_MODELS``, see :func:`models_set_in_env`): a
        different set raises :class:`QueryError` naming both lists. Otherwise, when the settings'
        models differ from the index's, a line in :attr:`notes` says which models are used.
        """
        kwargs: dict[str, Any] = dict(
            face_threshold=settings.face_threshold, face_margin=settings.face_margin,
            face_max_side=settings.face_max_side, precision=settings.precision,
            rerank=settings.rerank_options,
        )
        kwargs.update(overrides)
        requested = tuple(settings.models)
        engine = cls(lake_for(settings), requested if models_explicit else None, settings.weights,
                     settings.device, **kwargs)
        if not models_explicit and set(requested) != set(engine.model_names):
            engine.notes.append(f"using the index's models {','.join(engine.model_names)} "
                                f"(the settings name {','.join(requested)})")
        return engine

    # -- loaded once -----------------------------------------------------------------------------
    @property
    def device(self) -> Any:
        """The torch device the models run on (resolved on first use)."""
        if self._device is None:
            # torch here, not at the top: an objectid query needs no model, and importing torch costs ~2 s
            from .models import resolve_device

            self._device = resolve_device(self._device_name)
        return self._device

    @property
    def detector(self) -> FaceDetector:
        return self._run_model(self._load_detector)

    def _load_detector(self) -> FaceDetector:
        with self._init_lock:
            if self._detector is None:
                self._detector = FaceDetector(threshold=self.face_threshold, margin=self.face_margin,
                                              max_side=self.face_max_side, device=str(self.device))
        return self._detector

    @property
    def model_names(self) -> tuple[str, ...]:
        """The backbones the index was built with, in its fusion order (the ones queries are embedded with)."""
        return block_models(self.variants["full"].fusion.model_names)

    @property
    def models(self) -> list[LoadedModel]:
        """The backbones, in fusion order (loaded on first use unless ``preload_models``)."""
        return self.load_models()

    @property
    def models_loaded(self) -> bool:
        """Whether the backbones are loaded (an image query will not wait for them)."""
        return self._models is not None

    def load_models(self) -> list[LoadedModel]:
        """Load the backbones once; check their weights against the ones the collection was embedded with."""
        if self._models is not None:
            return self._models
        return self._run_model(self._load_models_now)

    def _load_models_now(self) -> list[LoadedModel]:
        with self._init_lock:
            if self._models is None:
                models, self.precision = load_checked_models(self.lake, self.model_names, self._weights, self.device,
                                                             self._default_precision)
                self._models = models
        return self._models

    # -- embedding -------------------------------------------------------------------------------
    def prepare(self, source: Any, crop_box: tuple[float, float, float, float] | None = None) -> list[np.ndarray]:
        """Each model's ``uint8 [S, S, 3]`` input, prepared exactly like the collection's images."""
        return prepare_inputs(self.models, source, crop_box)

    def forward(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Every fusion block ``[1, width]`` (each model's final feature and taps) for prepared inputs
        (the bare forward passes, one per model)."""
        return self._run_model(lambda: forward_inputs(self.models, arrays, self.precision))

    def embed(self, image: Query, crop_box: tuple[float, float, float, float] | None = None,
              variant: str = "full") -> np.ndarray:
        """The fused, L2-normalised ``float32 [dim]`` vector of an image (path, bytes or PIL image)."""
        parsed = self._parse(image)
        if parsed.kind != "image":
            raise QueryError(f"embed() needs an image, got {parsed.label}")
        return self._fused(parsed, crop_box, variant)

    def _fused(self, parsed: ParsedQuery, crop_box: tuple[float, float, float, float] | None, variant: str) -> np.ndarray:
        return self._encode(parsed, crop_box, variant)[0]

    def _encode(self, parsed: ParsedQuery, crop_box: tuple[float, float, float, float] | None,
                variant: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(the fused vector, the per-block projection that explains matches, or None) of an image query."""
        try:
            arrays = self.prepare(parsed.source(), crop_box)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise QueryError(f"query {parsed.label!r} could not be decoded ({type(exc).__name__}: {exc})") from exc
        vectors = self.forward(arrays)
        explainer = self.variants[variant].bundle.explain
        with one_blas_thread(self._blas):
            fused = transform(self.variants[variant].fusion, vectors)[0]
            return fused, (explainer.project(vectors)[0] if explainer is not None else None)

    def stored_vector(self, objectid: int, variant: str = "full") -> np.ndarray | None:
        """The fused vector the collection indexed for ``objectid`` (None when it is not in that index)."""
        return stored_vector(self.variants.get(variant), objectid)

    def _parse(self, query: Query) -> ParsedQuery:
        return parse_query(query, self._rows, self.lake.catalog_db.name)

    # -- filters ---------------------------------------------------------------------------------
    def allowed_ids(self, filters: SearchFilters) -> np.ndarray:
        """Objectids of the catalog that pass ``filters`` (DuckDB)."""
        return allowed_ids(self._db, filters)

    # -- search ----------------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        k: int = 10,
        face_crop: bool = False,
        filters: SearchFilters | None = None,
        weights: ScoringWeights | None = None,
        include_self: bool = False,
    ) -> SearchResponse:
        """The top ``k`` paintings for ``query`` (see the module doc); raises :class:`QueryError`.

        An objectid query leaves the painting itself out unless ``include_self``. The stages run in one
        direction, each once: parse → encode (with identification for a photo) → filter → retrieve → re-rank →
        explain and present."""
        if int(k) < 1:
            raise QueryError(f"k must be >= 1, got {k}")
        k, weights, filters = int(k), weights or self.scoring, filters or SearchFilters()
        clock = _StageClock()
        parsed = self._parse(query)
        clock.lap("parse")
        encoded = self._encode_object(parsed, face_crop, clock) if parsed.kind == "objectid" else \
            self._encode_photo(parsed, face_crop, clock)
        allowed = None
        if not filters.is_empty:
            allowed = self.allowed_ids(filters)
            clock.lap("filters")
        if not encoded.meta:  # an image has no catalog data: its match is the visual score itself
            weights = replace(weights, visual=1.0, metadata=0.0)
        response_args = dict(query=parsed.label, kind=parsed.kind, objectid=parsed.objectid, variant=encoded.variant,
                             face_count=encoded.face_count, face_box=encoded.face_box, filters=filters, k=k,
                             match_basis=IMAGE_MATCH_BASIS if not encoded.meta else hybrid_match_basis(weights),
                             **encoded.identification)
        if allowed is not None and allowed.size == 0:
            encoded.notes.append("no painting matches the filters")
            encoded.notes.extend(removal_report(self._db, filters))
            return SearchResponse([], notes=encoded.notes, timings_ms=clock.done(), **response_args)
        self_id = parsed.objectid if parsed.kind == "objectid" and not include_self else None
        cand_ids, cand_scores, cosines = self._retrieve(encoded, weights.n_candidates(k), allowed, parsed.objectid,
                                                        self_id, clock)
        results = self._present(parsed, encoded, cand_ids, cand_scores, cosines, weights, k)
        clock.lap("rerank")
        return SearchResponse(results, notes=encoded.notes, timings_ms=clock.done(), **response_args)

    def _encode_object(self, parsed: ParsedQuery, face_crop: bool, clock: "_StageClock") -> "_Encoded":
        """An objectid query's stored vector (its face vector with ``face_crop``), or its cached image embedded
        when the index lacks it."""
        oid = int(parsed.objectid)  # type: ignore[arg-type]
        encoded = _Encoded(meta=dict(self._rows[oid]))
        vector = None
        if face_crop:
            vector = self.stored_vector(oid, "face")
            if vector is not None:
                encoded.variant = "face"
            else:
                encoded.notes.append(f"objectid {oid} has no face vector; searched with the whole painting")
        if vector is None:
            vector = self.stored_vector(oid, "full")
        if vector is None:
            path = self.image_path(oid)
            if path is None or not path.is_file():
                raise QueryError(f"objectid {oid} is in the catalog but has neither an indexed vector nor a "
                                 f"cached image (its download may have failed)")
            encoded.notes.append(f"objectid {oid} is not in the index; re-embedded its cached image")
            vector, encoded.explain = self._encode(ParsedQuery("image", str(path), path=path), None, "full")
        else:
            encoded.explain = stored_projection(self.variants[encoded.variant].bundle.explain, oid)
        encoded.vector = vector
        clock.lap("vector")
        return encoded

    def _encode_photo(self, parsed: ParsedQuery, face_crop: bool, clock: "_StageClock") -> "_Encoded":
        """An image query's vector (of its faces with ``face_crop``, when found and indexed) and its
        identification."""
        encoded, crop = _Encoded(), None
        if face_crop:
            encoded.face_count, encoded.face_box = self._run_model(lambda: detect_query_faces(self.detector, parsed))
            clock.lap("faces")
            if encoded.face_box is None:
                encoded.notes.append(f"no face found (probability >= {self.face_threshold:g}); "
                                     "searched with the whole image")
            elif "face" not in self.variants:
                encoded.notes.append(f"{encoded.face_count} face(s) found but the data lake has no face index; "
                                     "searched with the whole image")
            else:
                encoded.variant, crop = "face", encoded.face_box
        encoded.vector, encoded.explain = self._encode(parsed, crop, encoded.variant)
        clock.lap("embed")
        encoded.identification = self._identify(parsed, encoded.vector, encoded.variant, encoded.notes)
        clock.lap("identify")
        return encoded

    def _retrieve(self, encoded: "_Encoded", wanted: int, allowed: np.ndarray | None, query_objectid: int | None,
                  self_id: int | None, clock: "_StageClock") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate objectids, their visual scores, their plain cosines): FAISS, then the collection's
        neighbourhoods (``ARTSIM_RERANK``; ``query_objectid``: the query painting's own, for an objectid query),
        ``wanted`` of them, the query painting left out (``self_id``)."""
        database, vector = self._databases[encoded.variant], encoded.vector
        depth = database.depth(wanted, self.rerank) + (self_id is not None)
        scores, ids = index_search(self.variants[encoded.variant].bundle, vector[None], depth, allowed)
        keep = np.array([i >= 0 and int(i) in self._rows and i != self_id for i in ids[0]], dtype=bool)
        cand_ids, cand_scores = ids[0][keep], scores[0][keep]
        clock.lap("index")
        cosines = cand_scores
        if self.rerank.method != "none":
            if self.rerank.uses_dba and not database.has_augmented:
                encoded.notes.append("the served index has no augmented vectors (built before re-ranking): "
                                     "re-ranked without them; re-run `artsim run`")
            cand_scores = database.rescore(vector, cand_ids, self.rerank, query_objectid)
            best = np.lexsort((cand_ids, -cand_scores))[:wanted]  # ties to the lower objectid
            cand_ids, cand_scores, cosines = cand_ids[best], cand_scores[best], cosines[best]
            clock.lap("rerank_vectors")
        return cand_ids, cand_scores, cosines

    def _present(self, parsed: ParsedQuery, encoded: "_Encoded", cand_ids: np.ndarray, cand_scores: np.ndarray,
                 cosines: np.ndarray, weights: ScoringWeights, k: int) -> list[SearchResult]:
        """The top ``k`` results: the metadata re-rank, each one's explanation and near-duplicate label
        (:func:`~artsim_pipeline.core.search_present.present_results`)."""
        duplicate_at = near_duplicate_level(self.calibration) if parsed.kind == "objectid" else None
        return present_results(self._rows, encoded.meta, cand_ids, cand_scores, cosines, weights, k,
                               explainer=self.variants[encoded.variant].bundle.explain,
                               query_projection=encoded.explain, query_objectid=parsed.objectid,
                               duplicate_at=duplicate_at, image_path=self.image_path)

    def image_path(self, objectid: int) -> Path | None:
        uuid = cell_text(self._rows.get(objectid, {}).get("uuid"))
        return self.lake.image_path(uuid) if uuid else None

    # -- identification (core/search_identify.py) ------------------------------------------------
    def identify_views(self, vectors: Sequence[np.ndarray], exclude: int | None = None,
                       photo: Any = None) -> dict[str, Any]:
        """``{"identified", "identification"}`` of a photo whose views' ``full`` vectors are ``vectors`` (whole
        first; a missing view is embedded from ``photo``, a PIL image, which geometric verification also needs);
        ``exclude``: an objectid left out (:func:`~artsim_pipeline.core.search_identify.identify_views`)."""
        return identify_views(self.calibration, self.variants["full"].bundle, self._rows, vectors, embed=self.embed,
                              painting_keypoints=self.painting_keypoints, exclude=exclude, photo=photo)

    def _identify(self, parsed: ParsedQuery, vector: np.ndarray, variant: str, notes: list[str]) -> dict[str, Any]:
        """The identification of an image query: the whole image first (a face-crop search embeds it again), its
        centre crops and the geometric check only as far as needed (:meth:`identify_views`)."""
        if self.calibration is None:
            notes.append(self.calibration_note or "no identification calibration")
            return {"identified": None, "identification": None}
        vectors = [vector if variant == "full" else self._fused(parsed, None, "full")]
        return self.identify_views(vectors, photo=parsed.pil())

    def _open_image(self, objectid: int) -> Any:
        """A cached painting's image (PIL, RGB) or None."""
        return open_image(self.image_path(objectid))

    def close(self) -> None:
        self._db.close()


class _StageClock:
    """Milliseconds per stage of one search (``timings_ms``), and the total."""

    def __init__(self) -> None:
        self.started = self.mark = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = (now - self.mark) * 1000.0
        self.mark = now

    def done(self) -> dict[str, float]:
        self.timings["total"] = (time.perf_counter() - self.started) * 1000.0
        return self.timings


@dataclass
class _Encoded:
    """What the encode stage hands on: the query vector, its variant, the query painting's catalog row (``meta``,
    empty for a photo), the per-block projection that explains matches, faces, identification and notes."""

    meta: dict[str, Any] = field(default_factory=dict)
    vector: Any = None
    variant: str = "full"
    explain: np.ndarray | None = None
    face_count: int | None = None
    face_box: tuple[float, float, float, float] | None = None
    identification: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=2)
def _engine_for(settings: Any, models_explicit: bool) -> SearchEngine:
    return SearchEngine.from_settings(settings, models_explicit=models_explicit)


def search(query: Query, k: int = 10, *, settings: Any = None, face_crop: bool = False,
           filters: SearchFilters | None = None, weights: ScoringWeights | None = None,
           include_self: bool = False) -> SearchResponse:
    """Convenience: search with an engine for ``settings`` (default: the ``ARTSIM_*`` environment), cached.

    The engine uses the index's models; with the default settings, a ``ARTSIM_MODELS`` that names
    other models is an error (see :meth:`SearchEngine.from_settings`).
    """
    explicit = False
    if settings is None:
        # the settings module: core reads the environment only in this convenience (test_layering)
        from artsim_pipeline.config import Settings

        settings, explicit = Settings.from_env(), models_set_in_env()
    return _engine_for(settings, explicit).search(query, k=k, face_crop=face_crop, filters=filters, weights=weights,
                                                  include_self=include_self)


__all__ = ["SearchEngine", "models_set_in_env", "search"]
