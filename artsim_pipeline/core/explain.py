"""Explaining a match: how much each part of the fused vector agreed (plain Python, no Dagster).

The fused vector mixes every backbone and tap in one PCA, so its cosine says *how* close two paintings are
but not *in what*. An :class:`Explainer`, fitted when the index is built and stored with it
(``explain-<v>.npz`` in the index bundle, sha256 in its manifest), keeps per fusion block (a backbone's
final feature, or one statistic of one of its mid-level taps):

* the block's standardisation (mean and std over a seeded sample of at most :data:`FIT_ROWS` paintings)
  and its leading principal directions (at most :data:`EXPLAIN_DIM`);
* every indexed painting's projection on them, unit length per block: ``vectors`` float16
  ``[N, sum of block dims]``, rows in ``ids`` order (objectids).

A match's agreement in a block is the cosine of the query's and the painting's projections; a *group*'s
agreement is the mean over its blocks:

* per backbone (``backbones``: one number per model);
* per depth (``depths``): ``early`` (the shallower half of a backbone's taps: colour, texture, brushwork),
  ``middle`` (the deeper half: forms and motifs), ``final`` (the pooled final feature: subject and
  composition). A tap's place is its order among the backbone's taps by the numbers in its module name
  (the order the registry, ``ModelSpec.taps``, declares them in); with one tap it counts as ``middle``.

**Words** (:func:`depth_level`): each depth's agreement is placed against two distributions measured at
fit time on the collection itself (``calibration``, per depth): seeded random pairs of distinct paintings
(``random_q50``, ``random_q75``, ``random_q90``) and sampled paintings with each of their :data:`NEIGHBOURS`
nearest neighbours by the fused vector (``neighbour_q25``, ``neighbour_q50``, ``neighbour_q75``):

==================  ================================================================================
level               rule
==================  ================================================================================
``very close``      at least the 75th percentile of nearest-neighbour pairs
``close``           else at least their 25th percentile (as alike as most nearest neighbours are)
``somewhat alike``  else at least the 75th percentile of random pairs
``different``       below that: no more alike than a typical pair of unrelated paintings
==================  ================================================================================

so "very close in palette and brushwork; different subject and composition" reads as: the early taps agree
as much as the best quarter of nearest neighbours do, the final features no more than most random pairs.

Explanation of one result (``SearchResult.explanation``, JSON)::

    {"backbones": {model: float}, "depths": {depth: float}, "levels": {depth: level},
     "metadata": {"style": 0.4, "artist": 0.3, ...  the bonuses that applied},
     "summary": "close in palette and brushwork; somewhat alike in forms and motifs; ...; same artist"}
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .fusion import TAP_SEPARATOR, block_model
from .recall import exact_topk

EXPLAIN_DIM = 32
FIT_ROWS = 8_192
CALIBRATION_PAIRS = 4_000
CALIBRATION_QUERIES = 500
NEIGHBOURS = 10
SEED = 0
DEPTHS = ("early", "middle", "final")
DEPTH_WORDS = {"early": "palette and brushwork", "middle": "forms and motifs", "final": "subject and composition"}
LEVELS = ("very close", "close", "somewhat alike", "different")
METADATA_WORDS = {"style": "same style", "artist": "same artist", "medium": "same medium",
                  "medium_partial": "related medium", "date": "painted within {years} years"}
EXPLAIN_FORMAT_VERSION = 1
_EPS = 1e-12


def _module_order(module: str) -> tuple[Any, ...]:
    """Sort key of a tap module by the numbers in its name (``blocks.3`` < ``blocks.10`` < ``layer4``)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", module))


def tap_depths(names: Sequence[str]) -> dict[str, str]:
    """The depth (:data:`DEPTHS`) of each fusion block name: a backbone's final feature is ``final``; its taps,
    ordered by the numbers in their module names (the registry declares them shallow to deep: ``blocks.3`` …
    ``blocks.6``, ``features.10`` … ``features.17``), are ``early`` in the shallower half and ``middle`` in the
    deeper half (one tap alone: ``middle``). No model is loaded (no torch import)."""
    taps: dict[str, set[str]] = {}
    for name in names:
        if TAP_SEPARATOR in name:
            model, rest = name.split(TAP_SEPARATOR, 1)
            taps.setdefault(model, set()).add(rest.rsplit(".", 1)[0])
    order = {model: sorted(modules, key=_module_order) for model, modules in taps.items()}
    out = {}
    for name in names:
        if TAP_SEPARATOR not in name:
            out[name] = "final"
            continue
        model, rest = name.split(TAP_SEPARATOR, 1)
        modules = order[model]
        place = (modules.index(rest.rsplit(".", 1)[0]) + 1) / (len(modules) + 1)
        out[name] = "early" if place < 0.5 else "middle"
    return out


def _cosine(value: float) -> float:
    """A reported agreement: 4 decimals, within [-1, 1] (the float16 storage can round past 1)."""
    return round(min(max(float(value), -1.0), 1.0), 4)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


@dataclass
class Explainer:
    """Per-block projections of the indexed paintings and how to project a query (module doc)."""

    blocks: tuple[str, ...]
    dims: tuple[int, ...]  # projected width of each block
    means: list[np.ndarray]  # float32 [width_b]
    scales: list[np.ndarray]  # float32 [width_b]
    bases: list[np.ndarray]  # float32 [dims_b, width_b]
    ids: np.ndarray  # int64 [N]
    vectors: np.ndarray  # float16 [N, sum(dims)]
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)  # depth -> quantiles

    def __post_init__(self) -> None:
        self.depths = tap_depths(self.blocks)
        self.models = tuple(dict.fromkeys(block_model(b) for b in self.blocks))
        self._offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(np.int64)
        self._order = np.argsort(self.ids)
        # the block columns of each group, derived once (groups() runs for every search)
        self._backbone_cols = {m: [i for i, b in enumerate(self.blocks) if block_model(b) == m] for m in self.models}
        self._depth_cols = {d: cols for d in DEPTHS
                            if (cols := [i for i, b in enumerate(self.blocks) if self.depths[b] == d])}

    # -- projections -------------------------------------------------------------------------------
    def project(self, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 ``[n, sum(dims)]``: rows of ``blocks`` projected, unit length per block."""
        parts = []
        for name, mean, scale, basis in zip(self.blocks, self.means, self.scales, self.bases):
            if name not in blocks:
                raise ValueError(f"explanation needs fusion block {name!r} (have {sorted(blocks)})")
            x = np.atleast_2d(np.asarray(blocks[name], dtype=np.float32))
            if x.shape[1] != len(mean):
                raise ValueError(f"block {name!r}: width {x.shape[1]}, the explainer was fitted on {len(mean)}")
            parts.append(_unit_rows(((x - mean) / scale) @ basis.T))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def rows(self, objectids: Sequence[int]) -> np.ndarray:
        """float32 ``[m, sum(dims)]`` stored projections of ``objectids`` (NaN rows for ids it lacks)."""
        objectids = np.asarray(objectids, dtype=np.int64)
        out = np.full((len(objectids), int(self._offsets[-1])), np.nan, np.float32)
        if not len(self.ids) or not len(objectids):
            return out
        pos = np.searchsorted(self.ids, objectids, sorter=self._order)
        pos = np.minimum(pos, len(self.ids) - 1)
        rows = self._order[pos]
        found = self.ids[rows] == objectids
        out[found] = self.vectors[rows[found]].astype(np.float32)
        return out

    def block_cosines(self, query: np.ndarray, others: np.ndarray) -> np.ndarray:
        """float64 ``[m, n_blocks]``: per-block cosines of ``query [D]`` (or ``[m, D]``) and ``others [m, D]``."""
        products = np.asarray(query, np.float64) * np.asarray(others, np.float64)
        return np.add.reduceat(products, self._offsets[:-1], axis=-1)

    def groups(self, cosines: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Per-backbone and per-depth means of ``cosines [m, n_blocks]``: ``{"backbones": {...}, "depths": {...}}``."""
        return {"backbones": {m: cosines[:, cols].mean(axis=1) for m, cols in self._backbone_cols.items()},
                "depths": {d: cosines[:, cols].mean(axis=1) for d, cols in self._depth_cols.items()}}

    def explain(self, query: np.ndarray, objectids: Sequence[int]) -> list[dict[str, Any] | None]:
        """One explanation (module doc, without the metadata part) per painting of ``objectids``; None for a
        painting the explainer does not hold."""
        others = self.rows(objectids)
        ok = ~np.isnan(others).any(axis=1)
        cos = self.block_cosines(query, np.where(ok[:, None], others, 0.0))
        grouped = self.groups(cos)
        out: list[dict[str, Any] | None] = []
        for i in range(len(others)):
            if not ok[i]:
                out.append(None)
                continue
            depths = {d: _cosine(v[i]) for d, v in grouped["depths"].items()}
            out.append({
                "backbones": {m: _cosine(v[i]) for m, v in grouped["backbones"].items()},
                "depths": depths,
                "levels": {d: depth_level(v, self.calibration.get(d)) for d, v in depths.items()},
            })
        return out

    # -- storage -----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        meta = {"format_version": EXPLAIN_FORMAT_VERSION, "blocks": list(self.blocks), "dims": list(self.dims),
                "calibration": self.calibration}
        arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
                                         "ids": np.asarray(self.ids, np.int64),
                                         "vectors": np.asarray(self.vectors, np.float16)}
        for i, (mean, scale, basis) in enumerate(zip(self.means, self.scales, self.bases)):
            arrays[f"mean_{i}"], arrays[f"scale_{i}"], arrays[f"basis_{i}"] = mean, scale, basis
        # an npz written entry by entry with a fixed timestamp: the same explainer gives the same bytes
        # (np.savez stamps the time, and the bytes' sha256 is part of the generation's content hash)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for key, array in arrays.items():
                entry = io.BytesIO()
                np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), entry.getvalue())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Explainer":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            if meta.get("format_version") != EXPLAIN_FORMAT_VERSION:
                raise ValueError(f"unsupported explanation format {meta.get('format_version')!r}")
            n = len(meta["blocks"])
            explainer = cls(tuple(meta["blocks"]), tuple(int(d) for d in meta["dims"]),
                            [z[f"mean_{i}"] for i in range(n)], [z[f"scale_{i}"] for i in range(n)],
                            [z[f"basis_{i}"] for i in range(n)], z["ids"].astype(np.int64), z["vectors"],
                            meta.get("calibration", {}))
        if explainer.vectors.shape != (len(explainer.ids), int(sum(explainer.dims))):
            raise ValueError(f"explanation vectors of shape {explainer.vectors.shape} for {len(explainer.ids)} "
                             f"paintings x {sum(explainer.dims)}")
        return explainer


def depth_level(value: float, calibration: Mapping[str, float] | None) -> str:
    """The word (:data:`LEVELS`) for a depth's agreement ``value`` (rules: module doc); without a
    calibration (a collection of fewer than 3 paintings) fixed cosines stand in."""
    cal = calibration or {"neighbour_q75": 0.9, "neighbour_q25": 0.6, "random_q75": 0.3}
    if value >= cal["neighbour_q75"]:
        return "very close"
    if value >= cal["neighbour_q25"]:
        return "close"
    if value >= cal["random_q75"]:
        return "somewhat alike"
    return "different"


def phrase(level: str, depth: str) -> str:
    """``close in palette and brushwork`` / ``different subject and composition``."""
    words = DEPTH_WORDS[depth]
    return f"different {words}" if level == "different" else f"{level} in {words}"


def summary(levels: Mapping[str, str], bonuses: Mapping[str, float], date_window_years: int = 50) -> str:
    """The sentence a card shows: the depths' phrases (early → final), then the metadata that matched."""
    parts = [phrase(levels[d], d) for d in DEPTHS if d in levels]
    for key, value in bonuses.items():
        if value > 0 and key in METADATA_WORDS:
            parts.append(METADATA_WORDS[key].format(years=date_window_years))
    return "; ".join(parts)


def fit_explainer(names: Sequence[str], blocks: Mapping[str, np.ndarray], objectids: np.ndarray,
                  fused: np.ndarray, *, dim: int = EXPLAIN_DIM, fit_rows: int = FIT_ROWS,
                  seed: int = SEED) -> Explainer:
    """Fit on the collection's ``blocks`` (the fusion's block ``names``; row i is ``objectids[i]``) and
    calibrate the words with the pairs of ``fused [N, d]`` (the indexed vectors, same rows)."""
    objectids = np.asarray(objectids, dtype=np.int64)
    n = len(objectids)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, fit_rows, replace=False)) if n > fit_rows else np.arange(n)
    means, scales, bases, dims, parts = [], [], [], [], []
    for name in names:
        x = np.asarray(blocks[name])
        fit = x[sample].astype(np.float64)
        mean = fit.mean(axis=0)
        scale = fit.std(axis=0)
        scale[scale < 1e-8] = 1.0
        z = (fit - mean) / scale
        r = max(1, min(dim, z.shape[1], max(len(sample) - 1, 1)))
        # the leading eigenvectors of the sample covariance (widths are at most a few thousand)
        _, vecs = np.linalg.eigh(z.T @ z)
        basis = vecs[:, ::-1][:, :r].T.astype(np.float32)
        basis *= np.where(basis[:, :1] < 0, -1.0, 1.0).astype(np.float32)  # a sign rule: reproducible output
        means.append(mean.astype(np.float32))
        scales.append(scale.astype(np.float32))
        bases.append(basis)
        dims.append(r)
        chunks = [_unit_rows(((x[s:s + 8192].astype(np.float32) - means[-1]) / scales[-1]) @ basis.T)
                  for s in range(0, n, 8192)]
        parts.append(np.concatenate(chunks, axis=0).astype(np.float16))
    order = np.argsort(objectids, kind="stable")
    vectors = np.concatenate(parts, axis=1)[order]
    explainer = Explainer(tuple(names), tuple(dims), means, scales, bases, objectids[order], vectors)

    # calibration: random pairs of distinct paintings, and sampled paintings' nearest neighbours
    calibration: dict[str, dict[str, float]] = {}
    if n >= 3:
        v = vectors.astype(np.float32)
        a = rng.integers(0, n, CALIBRATION_PAIRS)
        b = (a + rng.integers(1, n, CALIBRATION_PAIRS)) % n
        random_groups = explainer.groups(explainer.block_cosines(v[a], v[b]))["depths"]
        fused_sorted = np.asarray(fused, np.float32)[order]
        queries = np.sort(rng.choice(n, min(CALIBRATION_QUERIES, n), replace=False))
        _, nb = exact_topk(fused_sorted, fused_sorted[queries], min(NEIGHBOURS, n - 1), query_rows=queries)
        qa = np.repeat(queries, nb.shape[1])
        near_groups = explainer.groups(explainer.block_cosines(v[qa], v[nb.ravel()]))["depths"]
        for depth, values in random_groups.items():
            calibration[depth] = {
                **{f"random_q{q}": round(float(np.quantile(values, q / 100)), 4) for q in (50, 75, 90)},
                **{f"neighbour_q{q}": round(float(np.quantile(near_groups[depth], q / 100)), 4) for q in (25, 50, 75)},
            }
    explainer.calibration = calibration
    return explainer


def explain_bundle(bundle: Any, names: Sequence[str], blocks: Mapping[str, np.ndarray], objectids: np.ndarray,
                   fused: np.ndarray) -> Any:
    """``bundle`` (an :class:`~artsim_pipeline.core.index.IndexBundle` over ``fused``, rows ``objectids``) with
    its :class:`Explainer` and ``info["explanation"] = {blocks, dim, seconds}``."""
    started = time.perf_counter()
    explainer = fit_explainer(names, blocks, objectids, fused)
    info = dict(bundle.info)
    info["explanation"] = {"blocks": len(explainer.blocks), "dim": int(sum(explainer.dims)),
                           "seconds": round(time.perf_counter() - started, 3)}
    return replace(bundle, info=info, explain=explainer)


__all__ = ["explain_bundle", "DEPTHS", "DEPTH_WORDS", "Explainer", "depth_level", "fit_explainer", "phrase", "summary", "tap_depths"]
