"""Query API: find the paintings of the collection most similar to an image or to a painting.

Plain Python (no Dagster). A :class:`SearchEngine` is loaded once from a data lake built by
``artsim run`` (catalog, fusion models, FAISS indexes) and the backbones the index was built with;
each :meth:`SearchEngine.search` then runs:

1. **query** — an image (a file path, ``bytes`` or a PIL image) or an objectid of the collection
   (an ``int`` or a numeric string; a string naming an existing file is always an image);
2. **face crop** (``face_crop=True``) — MTCNN (:class:`~artsim_pipeline.core.faces.FaceDetector`
   with the settings' threshold and margin) gives the crop box; the ``face`` fusion and index are
   used. No face found, or no face index in the lake: the whole image and the ``full`` variant are
   used and a note says so;
3. **embedding** — every model's vector with exactly the collection's preprocessing
   (:func:`~artsim_pipeline.core.embedding.load_and_prepare`: JPEG draft decoding, crop, resize,
   centre crop, normalisation), then the variant's fusion transform (standardise, PCA, L2).
   An objectid query instead uses its stored fused vector, read back from the FAISS index (the
   same vector the collection was indexed with; re-embedding its cached image gives it again);
   a painting of the catalog that is not in the index is re-embedded from its cached image;
4. **filters** (artist, style, medium, year range) select the allowed objectids in DuckDB, before
   any ranking; the index search is then restricted to them;
5. **candidates** — the FAISS top ``candidate_factor · k`` (3·k) by cosine similarity (``visual``);
6. **hybrid re-rank** — ``final = 0.7 · visual + 0.3 · metadata`` with
   :func:`~artsim_pipeline.core.scoring.rerank`. The metadata score compares each candidate's
   catalog row with the *query's* row, so it exists only for an objectid query; an image query
   has no metadata, its metadata score is 0 for every candidate and the order is the visual one.

Nothing is excluded: a painting of the collection (by objectid or by its image file) comes back
first, itself.

Filters (:class:`SearchFilters`), all case- and accent-insensitive:

* ``artist`` — :func:`~artsim_pipeline.core.scoring.normalize_artist` of the text must be a
  *substring* of the catalog's ``artist_key`` ("rembrandt" matches "rembrandt van rijn" and
  "attributed to rembrandt van rijn");
* ``style`` / ``medium`` — substring of the painting's style list / medium;
* ``year_min`` / ``year_max`` — the painting's ``[beginyear, endyear]`` interval (one of them
  standing for both when the other is missing) overlaps the range; undated paintings are excluded.

Models: the index is the truth. The engine embeds queries with the models recorded in the ``full``
fusion (:attr:`SearchEngine.model_names`, in the index's order), whatever the settings' default
``models`` are; when those differ, :attr:`SearchEngine.notes` says which models are used. Only an
*explicit* choice (``ARTSIM_MODELS`` set, see :func:`models_set_in_env`) naming another set of
models than the index is an error.

Errors the user can fix (a missing or unreadable file, an unknown objectid, a lake without an
index, an explicit ``ARTSIM_MODELS`` the index was not built with) raise :class:`QueryError` (or
:class:`IndexNotBuiltError`) with a message naming the input.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import duckdb
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .embedding import forward_prepared, load_and_prepare
from .faces import FaceDetector, detect_faces_in_files
from .fusion import FusionModel, block_key, block_models, transform
from .generations import NoGenerationError, load_generation
from .index import IndexBundle
from .index import search as index_search
from .models import LoadedModel, load_model, resolve_device
from .preprocessing import AspectRatioError, check_aspect, open_oriented, oriented
from .scoring import ScoringWeights, fold_text, normalize_artist, rerank
from .storage import DataLake, lake_at, read_parquet, read_parquet_schema, readable

log = logging.getLogger(__name__)

Query = Union[str, "os.PathLike[str]", bytes, bytearray, int, Image.Image]

#: Catalog columns the engine keeps (``filtered_paintings``).
CATALOG_COLUMNS = ("objectid", "uuid", "title", "artist", "artist_key", "style", "beginyear", "endyear",
                   "displaydate", "medium")
_NUMERIC = re.compile(r"^\s*\d+\s*$")
_YEARS = re.compile(r"^\s*(\d{1,4})?\s*(?:(\.\.|[-–:])\s*(\d{1,4})?)?\s*$")


class QueryError(ValueError):
    """The query cannot be answered as given (bad input or missing data); the message names the input."""


class IndexNotBuiltError(QueryError):
    """The data lake has no catalog or search index yet (the pipeline has not run)."""


# --------------------------------------------------------------------------- filters


def parse_years(text: str) -> tuple[int | None, int | None]:
    """``"1600-1700"`` -> (1600, 1700); ``"1650"`` -> (1650, 1650); ``"1600-"`` / ``"-1700"`` open-ended."""
    match = _YEARS.match(text or "")
    if not match or (match.group(1) is None and match.group(3) is None):
        raise QueryError(f"year range {text!r} is not like 1600-1700, 1650, 1600- or -1700")
    low = int(match.group(1)) if match.group(1) is not None else None
    if match.group(2) is None:  # a single year
        return low, low
    high = int(match.group(3)) if match.group(3) is not None else None
    if low is not None and high is not None and low > high:
        raise QueryError(f"year range {text!r}: the first year is after the second")
    return low, high


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied in DuckDB before ranking (see the module doc for the matching rules)."""

    artist: str | None = None
    style: str | None = None
    medium: str | None = None
    year_min: int | None = None
    year_max: int | None = None

    @classmethod
    def create(cls, artist: str | None = None, style: str | None = None, medium: str | None = None,
               years: str | tuple[int | None, int | None] | None = None) -> "SearchFilters":
        low, high = parse_years(years) if isinstance(years, str) else (years or (None, None))
        return cls(artist or None, style or None, medium or None, low, high)

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SearchResult:
    """One ranked painting. Scores: ``final = w.visual * visual + w.metadata * metadata``."""

    rank: int
    objectid: int
    title: str
    artist: str
    date: str
    style: str
    medium: str
    image_path: str
    visual: float
    metadata: float
    final: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchResponse(list):
    """The ranked :class:`SearchResult` list, plus what the engine did to get it.

    ``kind`` is ``"image"`` or ``"objectid"``; ``variant`` the index searched (``full``/``face``);
    ``face_count``/``face_box`` the faces found in an image query (``face_crop=True``; None when
    detection did not run); ``notes`` human-readable remarks (e.g. no face found);
    ``timings_ms`` per stage.
    """

    def __init__(self, results: Sequence[SearchResult] = (), *, query: str = "", kind: str = "image",
                 objectid: int | None = None, variant: str = "full", face_count: int | None = None,
                 face_box: tuple[int, int, int, int] | None = None, notes: Sequence[str] = (),
                 filters: SearchFilters | None = None, k: int = 10,
                 timings_ms: dict[str, float] | None = None) -> None:
        super().__init__(results)
        self.query = query
        self.kind = kind
        self.objectid = objectid
        self.variant = variant
        self.face_count = face_count
        self.face_box = face_box
        self.notes = list(notes)
        self.filters = filters or SearchFilters()
        self.k = k
        self.timings_ms = dict(timings_ms or {})

    def to_frame(self) -> pd.DataFrame:
        columns = [f.name for f in SearchResult.__dataclass_fields__.values()]
        return pd.DataFrame([r.as_dict() for r in self], columns=columns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query, "kind": self.kind, "objectid": self.objectid, "variant": self.variant,
            "face_count": self.face_count, "face_box": list(self.face_box) if self.face_box else None,
            "filters": self.filters.as_dict(), "k": self.k, "notes": self.notes,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "results": [r.as_dict() for r in self],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, ensure_ascii=False)


def _text(value: Any) -> str:
    if value is None:
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _year(value: Any) -> int | None:
    text = _text(value)
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None


def display_date(row: dict[str, Any]) -> str:
    """``displaydate`` if present, else ``beginyear`` (``beginyear-endyear`` when they differ), else ``""``."""
    text = _text(row.get("displaydate")).strip()
    if text:
        return text
    begin, end = _year(row.get("beginyear")), _year(row.get("endyear"))
    if begin is not None and end is not None and end != begin:
        return f"{begin}-{end}"
    year = begin if begin is not None else end
    return "" if year is None else str(year)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def format_results(response: SearchResponse, title_width: int = 40, artist_width: int = 28) -> str:
    """Aligned text table of a response, with a header line and its notes."""
    head = f"query: {response.query} ({response.kind}, {response.variant} index"
    if response.face_count is not None:
        head += f", {response.face_count} face(s)"
    head += ")"
    if not response.filters.is_empty:
        head += "  filters: " + ", ".join(f"{k}={v}" for k, v in response.filters.as_dict().items())
    lines = [head] + [f"note: {note}" for note in response.notes]
    if not response:
        lines.append("no results")
        return "\n".join(lines)
    cols = ("rank", "objectid", "final", "visual", "meta", "title", "artist", "date", "style")
    rows = [
        (str(r.rank), str(r.objectid), f"{r.final:.4f}", f"{r.visual:.4f}", f"{r.metadata:.2f}",
         _cut(r.title, title_width), _cut(r.artist, artist_width), _cut(r.date, 16), _cut(r.style, 24))
        for r in response
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    right = {0, 1, 2, 3, 4}

    def fmt(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    lines += [fmt(cols), fmt(["-" * w for w in widths])] + [fmt(row) for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- engine


@dataclass
class _Variant:
    fusion: FusionModel
    bundle: IndexBundle
    ids: frozenset[int] = field(repr=False, default=frozenset())


@dataclass
class _Parsed:
    """A query resolved to an image source or an objectid."""

    kind: str  # "image" | "objectid"
    label: str
    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    objectid: int | None = None

    def source(self) -> Any:
        """A fresh source for ``Image.open`` / ``load_and_prepare`` (path, buffer or PIL image)."""
        if self.path is not None:
            return readable(self.path)
        if self.data is not None:
            return io.BytesIO(self.data)
        return self.image

    def pil(self) -> Image.Image:
        if self.image is not None:
            image = oriented(self.image)
            return image.convert("RGB") if image.mode != "RGB" else image
        return open_oriented(self.source())


def _collection_embedding_facts(lake: DataLake, model: str) -> tuple[set[str], set[str]]:
    """(weights ids, precisions) recorded in the model's embeddings files."""
    weights, precisions = set(), set()
    directory = lake.embeddings_model_dir(model)
    for path in sorted(directory.glob("*.parquet")) if directory.is_dir() else []:
        try:
            meta = read_parquet_schema(path).metadata or {}
        except Exception:  # noqa: BLE001 - a damaged file is the pipeline's problem, not the query's
            continue
        if b"artsim.weights_id" in meta:
            weights.add(meta[b"artsim.weights_id"].decode())
        if b"artsim.precision" in meta:
            precisions.add(meta[b"artsim.precision"].decode())
    return weights, precisions


def models_set_in_env(environ: Any = None) -> bool:
    """True when ``ARTSIM_MODELS`` is set (non-empty) in ``environ`` (default ``os.environ``): an explicit choice."""
    env = os.environ if environ is None else environ
    return bool((env.get("ARTSIM_MODELS") or "").strip())


def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController

        return ThreadpoolController().select(user_api="blas")
    except Exception:  # noqa: BLE001 - optional speed-up only
        return None


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
        preload_models: bool = True,
    ) -> None:
        started = time.perf_counter()
        self.lake = lake if isinstance(lake, DataLake) else DataLake(Path(lake))
        self.scoring = scoring
        self.face_threshold = face_threshold
        self.face_margin = face_margin
        self.face_max_side = face_max_side
        self.device = resolve_device(device)
        self.generation: str | None = None  # the index generation served (set by _load_variants)
        self.variants = self._load_variants()
        if models is not None and set(models) != set(self.model_names):
            raise QueryError(
                f"the index in {self.lake.index_dir} was built with models {','.join(self.model_names)} "
                f"but ARTSIM_MODELS names {','.join(models)}; unset ARTSIM_MODELS to use the index's models, "
                f"set it to {','.join(self.model_names)}, or re-run the pipeline with the new models"
            )
        self.notes: list[str] = []
        self.catalog = self._load_catalog()
        # plain per-painting dicts: per-row pandas access costs more than the rest of a query
        self._rows: dict[int, dict[str, Any]] = {
            int(row["objectid"]): {k: (None if _text(v) == "" else v) for k, v in row.items()}
            for row in self.catalog.to_dict("records")
        }
        # a table, not a registered frame: every query runs on its own cursor (thread-safe), which sees
        # the database's tables but not another connection's registered views
        self._db = duckdb.connect()
        self._db.register("catalog_frame", self.catalog.reset_index())
        self._db.execute("CREATE TABLE filtered_paintings AS SELECT * FROM catalog_frame")
        self._db.unregister("catalog_frame")
        self._init_lock = threading.Lock()  # models and the face detector are loaded once, by one thread
        self._weights, self._default_precision = weights, precision
        self._models: list[LoadedModel] | None = None
        self.precision = precision
        self._detector: FaceDetector | None = None
        self._blas = _blas_controller()
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
        )
        kwargs.update(overrides)
        requested = tuple(settings.models)
        engine = cls(lake_at(settings.data_lake, settings.work_dir), requested if models_explicit else None, settings.weights,
                     settings.device, **kwargs)
        if not models_explicit and set(requested) != set(engine.model_names):
            engine.notes.append(f"using the index's models {','.join(engine.model_names)} "
                                f"(the settings name {','.join(requested)})")
        return engine

    # -- loading ---------------------------------------------------------------------------------
    def _load_variants(self) -> dict[str, _Variant]:
        """Every variant's fusion and index from ONE generation (``index/CURRENT`` resolved once)."""
        try:
            generation = load_generation(self.lake)
        except NoGenerationError as exc:
            raise IndexNotBuiltError(
                f"no search index in data lake {self.lake.root} ({self.lake.index_pointer_path.name} missing "
                f"under {self.lake.index_dir}); run `artsim run` first"
            ) from exc
        except (OSError, ValueError, KeyError) as exc:
            raise IndexNotBuiltError(
                f"the search index in {self.lake.index_dir} cannot be read ({type(exc).__name__}: {exc}); "
                "re-run `artsim run`"
            ) from exc
        self.generation = generation.id
        return {
            variant: _Variant(generation.fusions[variant], bundle, frozenset(int(i) for i in bundle.ids))
            for variant, bundle in generation.bundles.items()
            if variant in ("full", "face")
        }

    def _parquet_catalog(self, parquet: Path, why: str | None) -> pd.DataFrame:
        """The catalog's Parquet copy (``tables/filtered_paintings.parquet``), when its DuckDB file cannot serve."""
        if why:
            self.notes.append(f"{why}: using {parquet.name} (run `artsim run` to repair the catalog)")
        return read_parquet(parquet, columns=list(CATALOG_COLUMNS))

    def _load_catalog(self) -> pd.DataFrame:
        frame = self._catalog_frame()
        frame["objectid"] = frame["objectid"].astype("int64")
        return frame.drop_duplicates("objectid").set_index("objectid", drop=False).rename_axis(None)

    def _catalog_frame(self) -> pd.DataFrame:
        """``filtered_paintings`` from ``catalog.duckdb``, else its Parquet copy (locked, absent or damaged)."""
        path = self.lake.catalog_db
        parquet = self.lake.filtered_paintings_parquet
        if not path.is_file():
            if not parquet.is_file():
                raise IndexNotBuiltError(f"no catalog at {path}; run `artsim run` first")
            return self._parquet_catalog(parquet, None)  # e.g. an object-store lake served from another machine
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                frame = con.execute(f"SELECT {', '.join(CATALOG_COLUMNS)} FROM filtered_paintings").df()
        except duckdb.CatalogException as exc:
            if not parquet.is_file():
                raise IndexNotBuiltError(f"{path} has no filtered_paintings table; run `artsim run` first") from exc
            frame = self._parquet_catalog(parquet, f"{path.name} has no filtered_paintings table")
        except duckdb.Error as exc:  # locked by a running pipeline, not on this machine, or damaged
            if not parquet.is_file():
                raise IndexNotBuiltError(f"{path} cannot be opened ({str(exc).splitlines()[0][:120]}) and there is "
                                         f"no {parquet.name}; run `artsim run` to repair the catalog") from None
            frame = self._parquet_catalog(parquet, None if "lock" in str(exc).lower() else f"{path.name} cannot be opened")
        return frame

    def _one_blas_thread(self) -> contextlib.AbstractContextManager[Any]:
        # One vector through the fusion is a gemv: BLAS threads only add wake-up latency (and
        # compete with torch's threads); limited, it costs ~0.2 ms instead of several ms.
        return self._blas.limit(limits=1) if self._blas is not None else contextlib.nullcontext()

    @property
    def detector(self) -> FaceDetector:
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

    def load_models(self) -> list[LoadedModel]:
        """Load the backbones once; check their weights against the ones the collection was embedded with."""
        if self._models is not None:
            return self._models
        with self._init_lock:
            if self._models is None:
                self._models = self._load_models()
        return self._models

    def _load_models(self) -> list[LoadedModel]:
        models: list[LoadedModel] = []
        precisions: set[str] = set()
        for name in self.model_names:
            model = load_model(name, weights=self._weights, device=self.device)
            recorded_weights, recorded_precisions = _collection_embedding_facts(self.lake, name)
            if recorded_weights and model.weights_id not in recorded_weights:
                raise QueryError(
                    f"model {name}: the collection was embedded with weights {sorted(recorded_weights)} but the "
                    f"settings load {model.weights_id!r} (ARTSIM_WEIGHTS); use the same weights or re-run the pipeline"
                )
            precisions |= recorded_precisions
            models.append(model)
        # the precision the collection was embedded with (the pipeline may fall back from bf16 to fp32)
        self.precision = precisions.pop() if len(precisions) == 1 else self._default_precision
        return models

    # -- query parsing ---------------------------------------------------------------------------
    def _parse(self, query: Query) -> _Parsed:
        if isinstance(query, Image.Image):
            return self._check_image(_Parsed("image", "<PIL image>", image=query))
        if isinstance(query, (bytes, bytearray)):
            return self._check_image(_Parsed("image", f"<{len(query)} bytes>", data=bytes(query)))
        if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
            return self._check_objectid(int(query), str(query))
        if isinstance(query, (str, os.PathLike)):
            text = os.fspath(query)
            path = Path(text).expanduser()
            if path.is_file():
                return self._check_image(_Parsed("image", text, path=path))
            if isinstance(query, str) and _NUMERIC.match(text):
                return self._check_objectid(int(text), text.strip())
            if path.exists():
                raise QueryError(f"query {text!r} is a directory, not an image file")
            raise QueryError(f"query {text!r}: no such file (and not a numeric objectid)")
        raise QueryError(f"query of type {type(query).__name__} is not an image path, bytes, PIL image or objectid")

    def _check_image(self, parsed: _Parsed) -> _Parsed:
        try:
            if parsed.image is not None:
                size = parsed.image.size
            else:
                with Image.open(parsed.source()) as image:
                    size = image.size  # identifies the format without decoding
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise QueryError(f"query {parsed.label!r} is not a readable image ({type(exc).__name__}: {exc})") from exc
        try:
            check_aspect(size, "the image")  # a thin strip would be scaled up to gigabytes
        except AspectRatioError as exc:
            raise QueryError(f"query {parsed.label!r} cannot be searched: {exc}") from exc
        return parsed

    def _check_objectid(self, objectid: int, label: str) -> _Parsed:
        if objectid not in self._rows:
            raise QueryError(f"objectid {label} is not in the collection (catalog {self.lake.catalog_db.name}, "
                             f"{len(self.catalog)} paintings)")
        return _Parsed("objectid", f"objectid {objectid}", objectid=objectid)

    # -- embedding -------------------------------------------------------------------------------
    def prepare(self, source: Any, crop_box: tuple[float, float, float, float] | None = None) -> list[np.ndarray]:
        """Each model's ``uint8 [S, S, 3]`` input, prepared exactly like the collection's images."""
        arrays = []
        for model in self.models:
            src = io.BytesIO(source.getvalue()) if isinstance(source, io.BytesIO) else source
            arrays.append(load_and_prepare(src, model.spec, crop_box, fast_decode=True))
        return arrays

    def forward(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Every fusion block ``[1, width]`` (each model's final feature and taps) for prepared inputs
        (the bare forward passes, one per model)."""
        blocks: dict[str, np.ndarray] = {}
        for model, array in zip(self.models, arrays):
            for name, values in forward_prepared(model, array[None], self.precision, taps=True).items():
                blocks[block_key(model.name, name)] = values
        return blocks

    def embed(self, image: Query, crop_box: tuple[float, float, float, float] | None = None,
              variant: str = "full") -> np.ndarray:
        """The fused, L2-normalised ``float32 [dim]`` vector of an image (path, bytes or PIL image)."""
        parsed = self._parse(image)
        if parsed.kind != "image":
            raise QueryError(f"embed() needs an image, got {parsed.label}")
        return self._fused(parsed, crop_box, variant)

    def _fused(self, parsed: _Parsed, crop_box: tuple[float, float, float, float] | None, variant: str) -> np.ndarray:
        try:
            arrays = self.prepare(parsed.source(), crop_box)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise QueryError(f"query {parsed.label!r} could not be decoded ({type(exc).__name__}: {exc})") from exc
        vectors = self.forward(arrays)
        with self._one_blas_thread():
            return transform(self.variants[variant].fusion, vectors)[0]

    def stored_vector(self, objectid: int, variant: str = "full") -> np.ndarray | None:
        """The fused vector the collection indexed for ``objectid`` (None when it is not in that index)."""
        entry = self.variants.get(variant)
        if entry is None or objectid not in entry.ids:
            return None
        return entry.bundle.index.reconstruct_batch(np.array([objectid], dtype=np.int64))[0]

    def _detect(self, parsed: _Parsed):
        if parsed.path is not None:  # the pipeline's own file path (same decoding as face_crops)
            row = detect_faces_in_files([parsed.path], self.detector).iloc[0]
            if row["error"]:
                raise QueryError(f"query {parsed.label!r}: face detection could not read it ({row['error']})")
            columns = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")
            box = None if pd.isna(row["crop_x0"]) else tuple(int(row[c]) for c in columns)
            return int(row["face_count"]), box
        result = self.detector.detect([parsed.pil()])[0]
        if result.error:
            raise QueryError(f"query {parsed.label!r}: face detection failed ({result.error})")
        return result.face_count, result.crop_box

    # -- filters ---------------------------------------------------------------------------------
    def allowed_ids(self, filters: SearchFilters) -> np.ndarray:
        """Objectids of the catalog that pass ``filters`` (DuckDB)."""
        where, params = [], {}
        if filters.artist:
            where.append("contains(coalesce(artist_key, ''), $artist)")
            params["artist"] = normalize_artist(filters.artist)
        if filters.style:
            where.append("contains(lower(strip_accents(coalesce(style, ''))), $style)")
            params["style"] = fold_text(filters.style)
        if filters.medium:
            where.append("contains(lower(strip_accents(coalesce(medium, ''))), $medium)")
            params["medium"] = fold_text(filters.medium)
        if filters.year_min is not None:
            where.append("coalesce(endyear, beginyear) >= $year_min")
            params["year_min"] = int(filters.year_min)
        if filters.year_max is not None:
            where.append("coalesce(beginyear, endyear) <= $year_max")
            params["year_max"] = int(filters.year_max)
        sql = "SELECT objectid FROM filtered_paintings" + (" WHERE " + " AND ".join(where) if where else "")
        with self._db.cursor() as cursor:  # searches run concurrently (the web server's thread pool)
            rows = cursor.execute(sql + " ORDER BY objectid", params).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    # -- search ----------------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        k: int = 10,
        face_crop: bool = False,
        filters: SearchFilters | None = None,
        weights: ScoringWeights | None = None,
    ) -> SearchResponse:
        """The top ``k`` paintings for ``query`` (see the module doc); raises :class:`QueryError`."""
        if int(k) < 1:
            raise QueryError(f"k must be >= 1, got {k}")
        k = int(k)
        weights = weights or self.scoring
        filters = filters or SearchFilters()
        timings: dict[str, float] = {}
        mark = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            timings[stage] = (now - mark) * 1000.0
            mark = now

        started = mark
        parsed = self._parse(query)
        notes: list[str] = []
        variant, face_count, face_box = "full", None, None
        query_meta: dict[str, Any] = {}
        lap("parse")
        if parsed.kind == "objectid":
            oid = int(parsed.objectid)  # type: ignore[arg-type]
            query_meta = dict(self._rows[oid])
            vector = None
            if face_crop:
                vector = self.stored_vector(oid, "face")
                if vector is not None:
                    variant = "face"
                else:
                    notes.append(f"objectid {oid} has no face vector; searched with the whole painting")
            if vector is None:
                vector = self.stored_vector(oid, "full")
            if vector is None:
                path = self.image_path(oid)
                if path is None or not path.is_file():
                    raise QueryError(f"objectid {oid} is in the catalog but has neither an indexed vector nor a "
                                     f"cached image (its download may have failed)")
                notes.append(f"objectid {oid} is not in the index; re-embedded its cached image")
                vector = self._fused(_Parsed("image", str(path), path=path), None, "full")
            lap("vector")
        else:
            crop = None
            if face_crop:
                face_count, face_box = self._detect(parsed)
                lap("faces")
                if face_box is None:
                    notes.append(f"no face found (probability >= {self.face_threshold:g}); "
                                 "searched with the whole image")
                elif "face" not in self.variants:
                    notes.append(f"{face_count} face(s) found but the data lake has no face index; "
                                 "searched with the whole image")
                else:
                    variant, crop = "face", face_box
            vector = self._fused(parsed, crop, variant)
            lap("embed")
            if not query_meta:
                notes.append("image query: no catalog metadata, so metadata scores are 0 and the order is visual")

        allowed = None
        if not filters.is_empty:
            allowed = self.allowed_ids(filters)
            lap("filters")
        response_args = dict(query=parsed.label, kind=parsed.kind, objectid=parsed.objectid, variant=variant,
                             face_count=face_count, face_box=face_box, filters=filters, k=k)
        if allowed is not None and allowed.size == 0:
            notes.append("no painting matches the filters")
            timings["total"] = (time.perf_counter() - started) * 1000.0
            return SearchResponse([], notes=notes, timings_ms=timings, **response_args)

        scores, ids = index_search(self.variants[variant].bundle, vector[None], weights.n_candidates(k), allowed)
        keep = np.array([i >= 0 and int(i) in self._rows for i in ids[0]], dtype=bool)
        cand_ids, cand_scores = ids[0][keep], scores[0][keep]
        lap("index")
        candidates = pd.DataFrame([self._rows[int(i)] for i in cand_ids], columns=list(CATALOG_COLUMNS))
        candidates["visual"] = cand_scores.astype(np.float64)
        ranked = rerank(query_meta, candidates, weights, k)
        results = [self._result(i + 1, row) for i, row in enumerate(ranked.itertuples(index=False))]
        lap("rerank")
        timings["total"] = (time.perf_counter() - started) * 1000.0
        return SearchResponse(results, notes=notes, timings_ms=timings, **response_args)

    def image_path(self, objectid: int) -> Path | None:
        uuid = _text(self._rows.get(objectid, {}).get("uuid"))
        return self.lake.image_path(uuid) if uuid else None

    def _result(self, rank: int, ranked: Any) -> SearchResult:
        oid = int(ranked.objectid)
        row = self._rows[oid]
        path = self.image_path(oid)
        return SearchResult(
            rank=rank, objectid=oid, title=_text(row.get("title")), artist=_text(row.get("artist")),
            date=display_date(row), style=_text(row.get("style")), medium=_text(row.get("medium")),
            image_path=str(path) if path else "", visual=float(ranked.visual), metadata=float(ranked.metadata),
            final=float(ranked.final),
        )

    def close(self) -> None:
        self._db.close()


@functools.lru_cache(maxsize=2)
def _engine_for(settings: Any, models_explicit: bool) -> SearchEngine:
    return SearchEngine.from_settings(settings, models_explicit=models_explicit)


def search(query: Query, k: int = 10, *, settings: Any = None, face_crop: bool = False,
           filters: SearchFilters | None = None, weights: ScoringWeights | None = None) -> SearchResponse:
    """Convenience: search with an engine for ``settings`` (default: the ``ARTSIM_*`` environment), cached.

    The engine uses the index's models; with the default settings, a ``ARTSIM_MODELS`` that names
    other models is an error (see :meth:`SearchEngine.from_settings`).
    """
    explicit = False
    if settings is None:
        from artsim_pipeline.config import Settings

        settings, explicit = Settings.from_env(), models_set_in_env()
    return _engine_for(settings, explicit).search(query, k=k, face_crop=face_crop, filters=filters, weights=weights)


__all__ = [
    "IndexNotBuiltError", "QueryError", "SearchEngine", "SearchFilters", "SearchResponse", "SearchResult",
    "display_date", "format_results", "models_set_in_env", "parse_years", "search",
]
