"""Evaluation report files: ``eval_report.json``, ``eval_report.md`` and the PNG plots' names (plain Python).

The plots themselves are drawn by :mod:`~artsim_pipeline.core.report_plots`; :func:`write_report` writes
them, then the Markdown, then the JSON (last, so its presence means a full report). Every file is
written atomically (temp file + rename), so a reader never sees half a report.

For the Dagster UI, :func:`summary_markdown` gives the headline/methods/ablations/learned-head tables and
:func:`markdown_with_plots` the same with the PNG plots embedded as ``data:image/png;base64`` images
(downscaled to at most 800 px wide, the whole text kept under about 1.5 MB). Every number in the
Markdown tables is rounded to 3 decimals.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from .evaluation import RANDOM_WEIGHTS_WARNING, EvaluationResult
from .report_plots import plot_examples, plot_pixel, plot_precision_curves, plot_precision_hist
from .scoring import ScoringWeights
from .storage import atomic_write_text, lake_path, readable

JSON_NAME = "eval_report.json"
MARKDOWN_NAME = "eval_report.md"
PLOT_NAMES = {
    "precision_curves": "eval_precision_at_k.png",
    "precision_hist": "eval_precision_at_5_per_query.png",
    "pixel": "eval_pixel_ssim_rmse.png",
    "examples": "eval_examples.png",
}
PLOT_CAPTIONS = {
    "precision_curves": "Precision@K per method (dashed: random ranking)",
    "precision_hist": "Per-query precision@5 (same artist)",
    "pixel": "Pixel SSIM and RMSE, top-5 results vs random pairs",
    "examples": "Example queries and their top 5 (green border: same artist, red: different)",
}
#: Embedded plots (:func:`markdown_with_plots`) are downscaled to at most this width in pixels.
EMBED_MAX_WIDTH = 800
#: :func:`markdown_with_plots` keeps its whole text (tables + base64 images) under this many bytes.
EMBED_MAX_BYTES = 1_500_000
REQUIRED_KEYS = ("headline", "methods", "random_baseline", "ablations", "pixel", "learned", "settings")
HEADLINE_KEYS = ("precision_at_k", "recall_at_k", "map_at_k", "map", "mean_rmse", "mean_ssim", "n_queries",
                 "models", "weights")


@dataclass
class ReportFiles:
    json: Path
    markdown: Path
    plots: dict[str, Path]


# ---------------------------------------------------------------- JSON

def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Path):
        return str(value)
    return value


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(_clean(report), indent=2, sort_keys=False, allow_nan=False) + "\n"


# ---------------------------------------------------------------- markdown

def _num(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded to ``digits`` decimals, NaN/None as "–", bools as yes/no."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return f"{number:.{digits}f}" if math.isfinite(number) else "–"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_num(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def headline_table(report: dict[str, Any]) -> str:
    h = report["headline"]
    return _table(
        ["P@5", "R@5", "mAP@5", "mAP", "random P@5", "random mAP", "pixel RMSE (top 5)", "SSIM (top 5)", "queries"],
        [[
            f"{_num(h['precision_at_k'])} ± {_num(h.get('precision_at_k_ci95'))}", h["recall_at_k"], h["map_at_k"],
            f"{_num(h['map'])} ± {_num(h.get('map_ci95'))}", h.get("random_precision_at_k"), h.get("random_map"),
            h["mean_rmse"], h["mean_ssim"], h["n_queries"],
        ]],
    )


def methods_table(report: dict[str, Any]) -> str:
    rows = [
        [r["method"] + (" ⚠ leaks the label" if r.get("leaks_label") else ""), r["relevance"], r["k"],
         r["precision_at_k"], r["recall_at_k"], r["map_at_k"], r["map"], r["n_queries"]]
        for r in report["methods"]
    ]
    rows += [
        [f"random ({r.get('estimate', '')})", r["relevance"], r["k"], r["precision_at_k"], r["recall_at_k"],
         r["map_at_k"], r["map"], r["n_queries"]]
        for r in report["random_baseline"]
    ]
    return _table(["method", "relevance", "K", "P@K", "R@K", "mAP@K", "mAP (full)", "queries"], rows)


def ablations_table(report: dict[str, Any]) -> str:
    ks = report["settings"]["ks"]
    rows = [[a["name"], a["dim"], *[a.get(f"precision_at_{k}") for k in ks], a.get("map_at_5"), a["map"]]
            for a in report["ablations"]]
    return _table(["vectors (visual, same artist)", "dim", *[f"P@{k}" for k in ks], "mAP@5", "mAP (full)"], rows)


LEARNED_TITLE = "Learned head (held-out artists)"


def learned_table(report: dict[str, Any]) -> str:
    """One row per held-out split and their mean: P@5 and mAP of the PCA fusion vs through the head."""
    learned = report.get("learned") or {}
    if not learned.get("available"):
        return f"_Not measured: {learned.get('reason', 'no learned block in this report')}._"
    rows = [[f"seed {r['seed']}", r["heldout_artists"], r["heldout_paintings"], r["precision_at_5_pca"],
             r["precision_at_5_learned"], r["map_pca"], r["map_learned"], r["epochs"], r["train_seconds"]]
            for r in learned["splits"]]
    rows.append(["mean", learned["heldout_artists"]["mean"], "", learned["precision_at_5_pca"],
                 learned["precision_at_5_learned"], learned["map_pca"], learned["map_learned"], "",
                 learned["train_seconds"]])
    return _table(["split", "held-out artists", "paintings", "P@5 PCA", "P@5 learned", "mAP PCA", "mAP learned",
                   "epochs chosen", "train s"], rows)


RERANKING_TITLE = "Re-ranking with the collection's neighbourhoods (honest leave-one-out)"


def reranking_table(report: dict[str, Any]) -> str:
    """Every re-ranking option: parameters chosen on held-out artists, then measured on all queries."""
    block = report.get("reranking") or {}
    if not block.get("available"):
        return f"_Not measured: {block.get('reason', 'no reranking block in this report')}._"
    rows = [[r["label"], "yes" if r["chosen"] else "", "yes" if r["configured"] else "",
             r["heldout_precision_at_5"], r["heldout_map"], r["precision_at_5"], r["map"], r["n_queries"]]
            for r in block["rows"]]
    table = _table(["option", "chosen on held-out", "configured", "held-out P@5", "held-out mAP", "P@5", "mAP",
                    "queries"], rows)
    verdict = ("beats" if block.get("configured_wins") else "does not beat")
    return (f"{table}\n\nThe configured option `{block['configured']}` {verdict} `none` on the held-out splits "
            f"and on all queries (P@5 and mAP); {len(block.get('grid', []))} parameter sets were measured on "
            f"the held-out splits (seeds {block.get('heldout_seeds')}).")


def learned_note(report: dict[str, Any]) -> str:
    learned = report.get("learned") or {}
    served = ("the pipeline serves the head (ARTSIM_EPOCHS=" f"{learned.get('epochs')})" if learned.get("enabled")
              else f"the pipeline serves no head (ARTSIM_EPOCHS=0); this is what one trained for up to "
                   f"{learned.get('epochs')} epochs would give")
    return (f"A head trained on the other artists' paintings only, measured by leave-one-out same-artist retrieval "
            f"among the held-out artists' paintings; {served}. Δ P@5 (learned − PCA): "
            f"{_num(learned.get('delta_precision_at_5'))}.")


def summary_markdown(report: dict[str, Any]) -> str:
    """Headline, methods and ablations tables (what the Dagster UI shows)."""
    h = report["headline"]
    parts = []
    if h.get("warning"):
        parts.append(f"**{h['warning']}**\n")
    parts += [
        f"**Headline** — {h['method']}, same {h['relevance']}, K={h['k']} "
        f"(models {', '.join(h['models'])}; weights {h['weights']}; re-ranking {h.get('rerank', 'none')}):\n",
        headline_table(report), "", "**Methods**\n", methods_table(report), "",
    ]
    if report.get("study", True):
        parts += ["**Ablations**\n", ablations_table(report), "", f"**{LEARNED_TITLE}**\n", learned_table(report)]
        if report.get("reranking"):
            parts += ["", f"**{RERANKING_TITLE}**\n", reranking_table(report)]
    else:
        parts += ["_Ablations, the learned head, face crops and pixel metrics: see `eval_study`._"]
    return "\n".join(parts)


def plot_png_for_markdown(path: Path | str, max_width: int = EMBED_MAX_WIDTH) -> bytes:
    """A plot PNG re-encoded for embedding: flattened on white, at most ``max_width`` px wide.

    Both a 256-colour palette PNG and an RGB PNG are encoded; the smaller is returned.
    """
    with Image.open(readable(path)) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        else:
            rgb = image.convert("RGB")
    if rgb.width > max_width:
        height = max(1, round(rgb.height * max_width / rgb.width))
        rgb = rgb.resize((max_width, height), Image.Resampling.LANCZOS)
    encoded = []
    for candidate in (rgb.quantize(colors=256), rgb):
        buffer = io.BytesIO()
        candidate.save(buffer, format="PNG", optimize=True)
        encoded.append(buffer.getvalue())
    return min(encoded, key=len)


def markdown_with_plots(
    report: dict[str, Any],
    plots: ReportFiles | Mapping[str, Path | str],
    *,
    max_width: int = EMBED_MAX_WIDTH,
    max_total_bytes: int = EMBED_MAX_BYTES,
) -> str:
    """:func:`summary_markdown` followed by the plots embedded as ``![caption](data:image/png;base64,...)``.

    ``plots`` is what :func:`write_report` returned (or its ``plots`` mapping, key -> PNG path; keys
    as in :data:`PLOT_NAMES`). Each plot is re-encoded at most ``max_width`` px wide
    (:func:`plot_png_for_markdown`); plots are added in :data:`PLOT_NAMES` order while the whole
    text stays within ``max_total_bytes`` (UTF-8). A plot that would exceed it, or cannot be read,
    is left out with a one-line note naming its file.
    """
    files = plots.plots if isinstance(plots, ReportFiles) else plots
    parts = [summary_markdown(report), "", "**Plots**", ""]

    def size(extra: Sequence[str] = ()) -> int:
        return len("\n".join([*parts, *extra]).encode("utf-8"))

    order = [key for key in PLOT_NAMES if key in files] + [key for key in files if key not in PLOT_NAMES]
    for key in order:
        path = lake_path(files[key])
        caption = PLOT_CAPTIONS.get(key, key)
        try:
            data = base64.b64encode(plot_png_for_markdown(path, max_width)).decode("ascii")
        except Exception as exc:  # noqa: BLE001 - a missing or broken plot must not break the summary
            parts += [f"_{caption}: not embedded ({type(exc).__name__}: {exc}); see {path.name}._", ""]
            continue
        block = [f"**{caption}**", "", f"![{caption}](data:image/png;base64,{data})", ""]
        if size(block) > max_total_bytes:
            parts += [f"_{caption}: not embedded (its {len(data) / 1e6:.2f} MB would take this summary over "
                      f"{max_total_bytes / 1e6:.2f} MB); see {path.name} in the reports folder._", ""]
            continue
        parts += block
    return "\n".join(parts)


def hybrid_rule(settings: Mapping[str, Any]) -> str:
    """``3K visual candidates by 0.7·visual + 0.3·metadata``: the hybrid re-rank with the weights the report used
    (its ``scoring`` setting; :class:`~artsim_pipeline.core.scoring.ScoringWeights` where it has none)."""
    w = {**ScoringWeights().__dict__, **(settings.get("scoring") or {})}
    return f"{w['candidate_factor']}K visual candidates by {w['visual']:g}·visual + {w['metadata']:g}·metadata"


def _intro_lines(report: dict[str, Any], study: bool) -> list[str]:
    """The title, what the report holds, the random-weights warning and the run's settings."""
    h = report["headline"]
    lines = ["# artsim evaluation study" if study else "# artsim evaluation report", ""]
    if not study:
        lines += ["The per-refresh report: every method and relevance, the chance level and the served index. "
                  "Ablations, the learned head, face crops, pixel metrics and example plots are in "
                  "`eval_study.md` (the `eval_study` asset).", ""]
    if h.get("weights") == "random":
        lines += [f"> **{RANDOM_WEIGHTS_WARNING}**", ""]
    fusion = report["settings"]["fusion"]
    pca = fusion.get("n_components") if fusion.get("use_pca") else "off"
    return lines + [
        f"{h['n_paintings']} paintings; models {', '.join(h['models'])}; weights `{h['weights']}`; "
        f"fused vectors: {fusion.get('source')} (PCA {pca}, whiten {fusion.get('whiten')}).",
        "",
    ]


def _headline_and_methods_lines(report: dict[str, Any]) -> list[str]:
    """The headline table and the methods table, with what the hybrid methods are."""
    h = report["headline"]
    return [
        f"## Headline: {h['method']} search, relevance = same {h['relevance']}, K = {h['k']}, "
        f"re-ranking {h.get('rerank', 'none')}",
        "",
        headline_table(report),
        "",
        "± is the 95% interval of the mean over queries.",
        "",
        "## Methods",
        "",
        f"`hybrid_no_label` re-ranks the top {hybrid_rule(report['settings'])} *without* the bonus "
        "for the label being measured (no artist bonus under artist relevance, no style bonus under style "
        "relevance). `hybrid_all_leaky` keeps every bonus, so it is partly told the answer: its numbers are not a "
        "quality measure. Full mAP of a hybrid method re-ranks the whole collection.",
        "",
        methods_table(report),
        "",
    ]


def _study_lines(report: dict[str, Any], study: bool) -> list[str]:
    """The skipped relevances, then (in the study) the ablations, learned head and re-ranking tables, and the
    learned head's note."""
    lines: list[str] = []
    for relevance, reason in (report.get("skipped_relevances") or {}).items():
        lines += [f"Relevance `{relevance}` skipped: {reason}.", ""]
    if study:
        lines += ["## Ablations (visual search, same artist)", "", ablations_table(report), ""]
        lines += [f"## {LEARNED_TITLE}", "", learned_table(report), ""]
        if report.get("reranking"):
            lines += [f"## {RERANKING_TITLE}", "", reranking_table(report), ""]
    if (report.get("learned") or {}).get("available"):
        lines += [learned_note(report), ""]
    return lines


def _face_lines(report: dict[str, Any], study: bool) -> list[str]:
    """The study's full painting vs face crop section (or why it is not available); nothing in the report."""
    face = report.get("face_vs_full") or {}
    if study and face.get("available"):
        ks = report["settings"]["ks"]
        return [
            f"## Full painting vs face crop ({face['n_paintings_with_face']} paintings with a face vector)", "",
            face["note"] + ".", "",
            _table(["vectors", "queries", "candidates", *[f"P@{k}" for k in ks], "mAP (full)"],
                   [[r["name"], r["n_queries"], r["n_candidates"], *[r.get(f"precision_at_{k}") for k in ks], r["map"]]
                    for r in face["rows"]]),
            "",
        ]
    if study:
        return ["## Full painting vs face crop", "", f"Not available: {face.get('reason', 'no face vectors')}.", ""]
    return []


def _pixel_lines(report: dict[str, Any]) -> list[str]:
    """The pixel similarity of the top 5 visual results, when measured."""
    p = report.get("pixel")
    return [] if not p else [
        "## Pixel similarity of the top 5 visual results",
        "",
        f"{p['n_queries']} queries (seeded sample of {p['sample_of']}), each against its top {p['top']} visual "
        f"results; images converted to grayscale, resized to {p['image_size']}×{p['image_size']}, values in [0, 1]. "
        f"RMSE in [0, 1] (lower = closer), SSIM (skimage, data_range 1; higher = closer). Baseline: "
        f"{p['n_random_pairs']} random pairs (seed {p['seed']}).",
        "",
        _table(["pairs", "count", "mean RMSE", "mean SSIM"],
               [["query vs top 5", p["n_pairs"], p["mean_rmse"], p["mean_ssim"]],
                ["random pairs", p["n_random_pairs"], p["random_mean_rmse"], p["random_mean_ssim"]]]),
        "",
    ]


def _index_check_lines(report: dict[str, Any]) -> list[str]:
    """The served FAISS index against exact search, when checked."""
    check = report.get("index_check")
    if not check:
        return []
    ks = report["settings"]["ks"]
    return [
        "## Served FAISS index vs exact search", "",
        _table(["K", "neighbour recall vs exact", "P@K via the index"],
               [[k, check.get(f"recall_vs_exact_at_{k}"), check.get(f"precision_at_{k}")] for k in ks]),
        "",
    ]


def _plots_and_protocol_lines(plots: dict[str, str]) -> list[str]:
    """The plots (captioned) and the evaluation protocol."""
    lines = ["## Plots", ""]
    for key, name in plots.items():
        caption = PLOT_CAPTIONS.get(key, key)
        lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    return lines + [
        "## Protocol", "",
        "- Leave-one-out: every painting with at least one relevant other painting is a query; it is never its own "
        "result.",
        "- Relevance: same normalised artist; or, where styles are known, at least one shared style.",
        "- P@K = hits in top K / K; R@K = hits / relevant; mAP@K = AP over the top K / min(K, relevant); "
        "mAP = AP over the full ranking. Ties in score go to the lower objectid.",
        "- Random baseline: expected values of a uniformly random ranking.",
        "",
    ]


def full_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    """The whole report (or study, ``report["study"]``) as Markdown, section by section, ``plots`` linked."""
    study = report.get("study", True)
    lines = _intro_lines(report, study) + _headline_and_methods_lines(report) + _study_lines(report, study)
    lines += _face_lines(report, study) + _pixel_lines(report) + _index_check_lines(report)
    lines += _plots_and_protocol_lines(plots)
    return "\n".join(lines)


# ---------------------------------------------------------------- everything

STUDY_NAME = "eval_study"


def report_names(name: str = "eval_report") -> tuple[str, str, dict[str, str]]:
    """(JSON, markdown, plot file names) of the report ``name`` (``eval_report`` or ``eval_study``)."""
    if name == "eval_report":
        return JSON_NAME, MARKDOWN_NAME, dict(PLOT_NAMES)
    return f"{name}.json", f"{name}.md", {key: f"{name}_{file.removeprefix('eval_')}" for key, file in PLOT_NAMES.items()}


def write_report(result: EvaluationResult, reports_dir: Path, image_path: Callable[[str], Path],
                 name: str = "eval_report") -> ReportFiles:
    """Write the plots, then the markdown and the JSON (last, so its presence means a full report).

    ``name``: ``eval_report`` (the per-refresh report: precision plots only) or ``eval_study``
    (:data:`STUDY_NAME`: every plot), each with its own files (:func:`report_names`)."""
    reports_dir = lake_path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    json_name, markdown_name, plot_names = report_names(name)
    plots: dict[str, Path] = {}
    plot_precision_curves(result, reports_dir / plot_names["precision_curves"])
    plots["precision_curves"] = reports_dir / plot_names["precision_curves"]
    if any(m.relevance == "artist" for m in result.methods):
        plot_precision_hist(result, reports_dir / plot_names["precision_hist"])
        plots["precision_hist"] = reports_dir / plot_names["precision_hist"]
    if result.pixel is not None:
        plot_pixel(result, reports_dir / plot_names["pixel"])
        plots["pixel"] = reports_dir / plot_names["pixel"]
    if result.examples:
        plot_examples(result, image_path, reports_dir / plot_names["examples"])
        plots["examples"] = reports_dir / plot_names["examples"]
    report = dict(result.report)
    report["plots"] = {key: path.name for key, path in plots.items()}
    markdown = reports_dir / markdown_name
    atomic_write_text(markdown, full_markdown(report, report["plots"]))
    target = reports_dir / json_name
    atomic_write_text(target, report_json(report))
    return ReportFiles(json=target, markdown=markdown, plots=plots)
