"""``artsim bench descriptor``: the descriptor study (issue 37): pooling, input scales and flips, normalisation,
style statistics, each measured with the evaluation's own protocol.

Step 1, :func:`extract`, runs each backbone once per input variant (``orig``, ``flip``, ``scale<f>``) over
the lake's cached images and keeps, from the same forward pass, every pooled form of its maps
(:mod:`artsim_pipeline.core.descriptors`): the final map by ``gap`` / ``gem`` / ``rmac``, the taps' per-channel
means (the pipeline's tap blocks) and an early layer's channel covariance (``gram``). One ``.npz`` per model
and variant under ``--work`` (reused when present), with the seconds per image it took.

Step 2, :func:`study`, builds every option from those arrays (:data:`OPTIONS`), fuses it with the pipeline's
recipe (standardise, balance, PCA ``pca_dim``) and measures it like ``eval_study``'s re-ranking block: the
configured re-ranking, same-artist P@5 and full-ranking mAP on the three held-out artist splits
(:data:`~artsim_pipeline.core.evaluation.learned.SPLIT_SEEDS`, leave-one-out among the held-out paintings) and
on all queries, with 95% intervals and the paired interval of its gain over today's descriptor; the embedding
cost relative to today's (each variant timed back to back on ``--time-images`` images, :func:`variant_times`,
and the forward work) and the index size. JSON report: ``--out`` (default
``<data_lake>/reports/bench_descriptor.json``) and its markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from artsim_pipeline.core import descriptors as desc
from artsim_pipeline.core.storage import atomic_write_text

#: The module whose output is a backbone's final feature map (before its global pooling).
FINAL_MAP = {"efficientnet_lite0": "bn2", "efficientnet_lite1": "bn2", "efficientnet_lite2": "bn2",
             "mobilenet_v2": "features"}
#: The early (stride 8) module whose channel covariance is the ``gram`` style block.
EARLY_MAP = {"efficientnet_lite0": "blocks.2", "efficientnet_lite1": "blocks.2", "efficientnet_lite2": "blocks.2",
             "mobilenet_v2": "features.6"}
VARIANTS = ("orig", "flip", "scale0.75", "scale0.5")
BATCH = 32


def _variant_spec(spec: Any, variant: str) -> Any:
    """The model spec an input variant is prepared with (``scale<f>``: sizes times ``f``)."""
    if variant.startswith("scale"):
        factor = float(variant[len("scale"):])
        return replace(spec, input_size=int(round(spec.input_size * factor)),
                       resize_size=int(round(spec.resize_size * factor)))
    return spec


def _hooks(model: Any, store: dict[str, Any]) -> list[Any]:
    named = dict(model.module.named_modules())
    wanted = {"final": FINAL_MAP[model.name], "early": EARLY_MAP[model.name],
              **{f"tap:{tap}": tap for tap in model.spec.taps}}

    def keep(key: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            store[key] = output.float()
        return hook

    return [named[module].register_forward_hook(keep(key)) for key, module in wanted.items()]


def _pooled(store: Mapping[str, Any]) -> dict[str, np.ndarray]:
    blocks = {f"final.{p}": desc.pool_final(store["final"], p) for p in desc.POOLINGS}
    blocks["early.gram"] = desc.gram(store["early"])
    blocks.update({f"{key[4:]}.mean": store[key].mean(dim=(2, 3)) for key in store if key.startswith("tap:")})
    return {name: value.cpu().numpy().astype(np.float32) for name, value in blocks.items()}


def extract_one(model: Any, paths: Sequence[Path], variant: str) -> tuple[dict[str, np.ndarray], float]:
    """Every pooled block of ``model`` for the images at ``paths`` under ``variant``; seconds per image."""
    import torch

    from artsim_pipeline.core.embedding import load_and_prepare
    from artsim_pipeline.core.preprocessing import normalize_batch

    spec = _variant_spec(model.spec, variant)
    store: dict[str, Any] = {}
    handles = _hooks(model, store)
    parts: list[dict[str, np.ndarray]] = []
    started = time.perf_counter()
    try:
        for start in range(0, len(paths), BATCH):
            arrays = np.stack([load_and_prepare(p, spec) for p in paths[start:start + BATCH]])
            if variant == "flip":
                arrays = np.ascontiguousarray(arrays[:, :, ::-1])
            with torch.inference_mode():
                model.module(normalize_batch(arrays, spec, model.device))
            parts.append(_pooled(store))
            store.clear()
    finally:
        for handle in handles:
            handle.remove()
    seconds = (time.perf_counter() - started) / max(len(paths), 1)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}, seconds


def extract(paths: Sequence[Path], models: Sequence[str], variants: Sequence[str], work: Path,
            log: Callable[[str], None] = print) -> None:
    """:func:`extract_one` for each model x variant whose file under ``work`` is missing."""
    from artsim_pipeline.core.models import load_model

    work.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        for name in models:
            target = work / f"{name}--{variant}.npz"
            if target.is_file():
                continue
            blocks, seconds = extract_one(load_model(name), paths, variant)
            tmp = target.with_suffix(".tmp.npz")
            np.savez(tmp, seconds_per_image=np.array(seconds), **blocks)
            tmp.replace(target)
            log(f"descriptor: {name} {variant}: {seconds * 1000:.1f} ms/image")


def variant_times(paths: Sequence[Path], models: Sequence[str], variants: Sequence[str],
                  rounds: int = 3) -> dict[str, float]:
    """Seconds per image of each input variant through every model, measured back to back on ``paths`` (median
    of ``rounds``), so the variants are compared at one load (the extraction's own times are not)."""
    from artsim_pipeline.core.models import load_model

    loaded = [load_model(name) for name in models]
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            times[variant].append(sum(extract_one(model, paths, variant)[1] for model in loaded))
    return {variant: float(np.median(values)) for variant, values in times.items()}


def load_features(work: Path, models: Sequence[str],
                  variants: Sequence[str]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{variant: {model: {block: array}}}`` of the files :func:`extract` wrote (``seconds_per_image`` too)."""
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for variant in variants:
        for name in models:
            path = work / f"{name}--{variant}.npz"
            if path.is_file():
                with np.load(path) as data:
                    out.setdefault(variant, {})[name] = {key: data[key] for key in data.files}
    return out


@dataclass(frozen=True)
class Option:
    """One descriptor option: which pooling of the final map, which input variants, which extra blocks,
    which normalisation before the fusion and which whitening after its PCA."""

    name: str
    pooling: str = "gap"
    variants: tuple[str, ...] = ("orig",)
    gram: bool = False
    power: float | None = None  # signed power normalisation of every block before the fusion
    shrink: float | None = None  # PCA whitening with this shrinkage (None: unwhitened, as today)


#: The options of the study, today's first.
OPTIONS = (
    Option("today (GAP, taps mean)"),
    Option("power 0.5 (signed sqrt) before PCA", power=0.5),
    Option("whitened PCA (plain)", shrink=0.0),
    Option("whitened PCA, shrinkage 1", shrink=1.0),
    Option("whitened PCA, shrinkage 10", shrink=10.0),
    Option("whitened PCA, shrinkage 30", shrink=30.0),
    Option("GeM p=3", pooling="gem"),
    Option("R-MAC", pooling="rmac"),
    Option("+ horizontal flip", variants=("orig", "flip")),
    Option("+ scale 0.75", variants=("orig", "scale0.75")),
    Option("+ flip + scale 0.75", variants=("orig", "flip", "scale0.75")),
    Option("+ scale 0.5", variants=("orig", "scale0.5")),
    Option("scale 0.75 instead", variants=("scale0.75",)),
    Option("+ gram (early layer)", gram=True),
    Option("GeM + gram", pooling="gem", gram=True),
    Option("R-MAC + gram", pooling="rmac", gram=True),
    Option("R-MAC + gram + flip", pooling="rmac", gram=True, variants=("orig", "flip")),
    Option("R-MAC + gram + scale 0.5", pooling="rmac", gram=True, variants=("orig", "scale0.5")),
)


def option_blocks(features: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                  option: Option) -> dict[str, np.ndarray]:
    """The fusion blocks (named as the pipeline's: ``<model>``, ``<model>@<tap>.mean``, ``<model>@early.gram``)
    of ``option``, averaged over its input variants."""
    from artsim_pipeline.core.fusion import block_key

    per_variant = []
    for variant in option.variants:
        blocks: dict[str, np.ndarray] = {}
        for model, arrays in features[variant].items():
            for name, values in arrays.items():
                if name == f"final.{option.pooling}":
                    blocks[model] = values
                elif name.endswith(".mean") or (option.gram and name == "early.gram"):
                    blocks[block_key(model, name)] = values
        per_variant.append(blocks)
    blocks = desc.average_variants(per_variant)
    if option.power is not None:
        blocks = {name: desc.power_normalise(v, option.power) for name, v in blocks.items()}
    return blocks


def fused(blocks: Mapping[str, np.ndarray], option: Option, pca_dim: int) -> np.ndarray:
    """The option's fused vectors: the pipeline's fusion, then (``shrink``) whitening with shrinkage."""
    from artsim_pipeline.core.fusion import fit_fusion, transform

    model = fit_fusion(dict(blocks), n_components=pca_dim, whiten=option.shrink is not None,
                       whiten_shrink=option.shrink or 0.0)
    return transform(model, dict(blocks))


def _ci95(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def measure(vectors: np.ndarray, meta: Any, splits: Sequence[np.ndarray], rerank: Any) -> dict[str, Any]:
    """Same-artist P@5 and full-ranking mAP of fused ``vectors``: on the held-out artist splits (the mean over
    splits; the 95% interval over their queries pooled) and on all queries, under ``rerank``."""
    from artsim_pipeline.core.evaluation.protocol import evaluate_method

    held = [evaluate_method(vectors[rows], meta.subset(rows), "visual", "artist", ks=(5,), sample=None,
                            rerank=rerank) for rows in splits]
    every = evaluate_method(vectors, meta, "visual", "artist", ks=(5,), rerank=rerank)
    pooled = {key: np.concatenate([r.per_query[key] for r in held]) for key in ("precision@5", "map")}
    per_query = {f"heldout_{key}": pooled[key] for key in pooled} | {key: every.per_query[key] for key in pooled}
    return {
        "per_query": per_query,
        "heldout_precision_at_5": float(np.mean([r.mean("precision@5") for r in held])),
        "heldout_precision_at_5_ci95": _ci95(pooled["precision@5"]),
        "heldout_map": float(np.mean([r.mean("map") for r in held])),
        "heldout_map_ci95": _ci95(pooled["map"]),
        "precision_at_5": every.mean("precision@5"), "precision_at_5_ci95": _ci95(every.per_query["precision@5"]),
        "map": every.mean("map"), "map_ci95": _ci95(every.per_query["map"]),
        "n_queries": every.n_queries, "n_heldout_queries": int(sum(r.n_queries for r in held)),
    }


def paired_deltas(row: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, float]:
    """The option's gain over ``reference`` (today's descriptor) on the same queries, with the 95% interval of
    the per-query differences (paired: much narrower than the two rows' own intervals)."""
    out: dict[str, float] = {}
    for key, values in row["per_query"].items():
        diff = np.asarray(values, dtype=np.float64) - np.asarray(reference["per_query"][key], dtype=np.float64)
        name = key.replace("@5", "_at_5")
        out[f"delta_{name}"] = float(diff.mean())
        out[f"delta_{name}_ci95"] = _ci95(diff)
    return out


def cost(features: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], option: Option,
         times: Mapping[str, float] | None = None) -> dict[str, float]:
    """The option's embedding cost per image against today's (``orig`` only): seconds (``times`` of
    :func:`variant_times` when given, else those of the extraction), and forward work (pixels through the
    backbones), which does not depend on the machine's load."""
    def seconds(variant: str) -> float:
        if times is not None:
            return float(times[variant])
        return float(sum(float(arrays["seconds_per_image"]) for arrays in features[variant].values()))

    def pixels(variant: str) -> float:
        factor = float(variant[len("scale"):]) if variant.startswith("scale") else 1.0
        return factor * factor

    return {"embed_seconds_per_image": round(sum(seconds(v) for v in option.variants), 4),
            "embed_time_ratio": round(sum(seconds(v) for v in option.variants) / seconds("orig"), 3),
            "forward_work_ratio": round(sum(pixels(v) for v in option.variants), 3)}


def study(features: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], meta: Any, *, pca_dim: int = 512,
          rerank: Any = None, options: Sequence[Option] = OPTIONS, times: Mapping[str, float] | None = None,
          log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per option whose input variants were extracted: its measures (:func:`measure`), costs, sizes."""
    from artsim_pipeline.core.evaluation.learned import SPLIT_SEEDS
    from artsim_pipeline.core.head import heldout_artists, split_rows
    from artsim_pipeline.core.rerank import RerankOptions

    rerank = rerank if rerank is not None else RerankOptions()
    splits = [split_rows(meta.artist_keys, heldout_artists(meta.artist_keys, seed))[1] for seed in SPLIT_SEEDS]
    rows = []
    for option in options:
        if not all(variant in features for variant in option.variants):
            log(f"descriptor: {option.name}: skipped (variants {', '.join(option.variants)} not all extracted)")
            continue
        started = time.perf_counter()
        blocks = option_blocks(features, option)
        vectors = fused(blocks, option, pca_dim)
        fuse_s = time.perf_counter() - started
        row = {"name": option.name, "pooling": option.pooling, "variants": list(option.variants),
               "gram": option.gram, "power": option.power, "shrink": option.shrink,
               **measure(vectors, meta, splits, rerank), **cost(features, option, times),
               "n_blocks": len(blocks), "fused_input_dim": int(sum(v.shape[1] for v in blocks.values())),
               "index_dim": int(vectors.shape[1]), "fusion_seconds": round(fuse_s, 2), "rerank": rerank.label}
        rows.append(row)
        row.update(paired_deltas(row, rows[0]))
        log(f"descriptor: {option.name}: held-out P@5 {row['heldout_precision_at_5']:.3f} mAP "
            f"{row['heldout_map']:.3f}; all P@5 {row['precision_at_5']:.3f} mAP {row['map']:.3f}")
    for row in rows:
        row.pop("per_query")
    return rows


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The study's table (one line per option)."""
    lines = ["| option | held-out P@5 | held-out mAP | P@5 | mAP | Δ held-out P@5 / mAP (paired) | "
             "Δ P@5 / mAP (paired) | embed time × | forward work × | index dim |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['heldout_precision_at_5']:.3f} ± {r['heldout_precision_at_5_ci95']:.3f} | "
            f"{r['heldout_map']:.3f} ± {r['heldout_map_ci95']:.3f} | {r['precision_at_5']:.3f} ± "
            f"{r['precision_at_5_ci95']:.3f} | {r['map']:.3f} ± {r['map_ci95']:.3f} | "
            f"{r['delta_heldout_precision_at_5']:+.3f} ± {r['delta_heldout_precision_at_5_ci95']:.3f} / "
            f"{r['delta_heldout_map']:+.3f} ± {r['delta_heldout_map_ci95']:.3f} | "
            f"{r['delta_precision_at_5']:+.3f} ± {r['delta_precision_at_5_ci95']:.3f} / "
            f"{r['delta_map']:+.3f} ± {r['delta_map_ci95']:.3f} | {r['embed_time_ratio']:.2f} | "
            f"{r['forward_work_ratio']:.2f} | {r['index_dim']} |")
    return "\n".join(lines) + "\n"


def collection_inputs(lake: Any, models: Sequence[str]) -> tuple[np.ndarray, list[Path], Any]:
    """The collection's objectids (sorted), their cached images' paths and their :class:`ItemMeta`."""
    from artsim_pipeline.core.evaluation.protocol import ItemMeta
    from artsim_pipeline.core.lake_reads import catalog_paintings, current_collection

    full = current_collection(lake, models, tap_set="none")["full"]
    ids = np.sort(np.asarray(full.objectids, dtype=np.int64))
    catalog = catalog_paintings(lake, columns=["objectid", "uuid", "title", "artist", "artist_key", "style",
                                               "beginyear", "endyear", "displaydate", "medium"])
    uuids = catalog.set_index("objectid").loc[ids, "uuid"]
    return ids, [lake.image_path(str(u)) for u in uuids], ItemMeta.from_catalog(ids, catalog)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artsim bench descriptor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"input variants to extract (default {','.join(VARIANTS)})")
    parser.add_argument("--work", type=Path, default=None,
                        help="feature files (default <data_lake>/reports/descriptor_features; reused when present)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--time-images", type=int, default=64,
                        help="images each variant is timed on, back to back, 3 rounds (default 64; 0: the "
                             "extraction's times)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default <data_lake>/reports/bench_descriptor.json, and its .md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``artsim bench descriptor``) on the lake's collection; returns the exit status."""
    import torch

    from artsim_pipeline.config import Settings
    from artsim_pipeline.core.lake import lake_for

    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    lake = lake_for(settings)
    torch.set_num_threads(max(1, args.threads))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    work = args.work or lake.reports_dir / "descriptor_features"
    out = args.out or lake.reports_dir / "bench_descriptor.json"
    try:
        _ids, paths, meta = collection_inputs(lake, settings.models)
        extract(paths, settings.models, variants, work)
        times = variant_times(paths[:args.time_images], settings.models, variants) if args.time_images > 0 else None
        rows = study(load_features(work, settings.models, variants), meta, pca_dim=settings.pca_dim,
                     rerank=settings.rerank_options, times=times)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"bench descriptor failed: {exc}")
        return 1
    report = {"benchmark": "descriptor", "models": list(settings.models), "n_paintings": len(paths),
              "variant_seconds_per_image": times,
              "pca_dim": settings.pca_dim, "rerank": settings.rerank_options.label, "rows": rows}
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(rows))
    print(markdown(rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
