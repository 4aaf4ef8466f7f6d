"""The evaluation report's PNG plots, drawn from an :class:`~artsim_pipeline.core.evaluation.EvaluationResult`.

Plain Python (no Dagster). matplotlib's Agg canvas directly (no pyplot, no display); each PNG is written
atomically (temp file + rename). File names are :data:`~artsim_pipeline.core.reports.PLOT_NAMES`
(:func:`~artsim_pipeline.core.reports.report_names`):

* :func:`plot_precision_curves` — precision@K per method and relevance, random ranking dashed;
* :func:`plot_precision_hist` — per-query precision@5 (same artist), visual vs hybrid, random mean;
* :func:`plot_pixel` — SSIM and RMSE of query vs top results against random pairs;
* :func:`plot_examples` — example queries and their top results (green border: same artist, red: different).

A report computed with random weights says so in every title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from .evaluation import EvaluationResult
from .storage import atomic_path, readable

_GREEN, _RED, _BLUE = "#1a9641", "#d7191c", "#2c7bb6"


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, target: Path, dpi: int = 100) -> None:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _title_suffix(report: dict[str, Any]) -> str:
    return " — RANDOM WEIGHTS, meaningless" if report["headline"].get("weights") == "random" else ""


def plot_precision_curves(result: EvaluationResult, target: Path) -> None:
    relevances = sorted({key.split("/")[1] for key in result.curves}, key=lambda r: (r != "artist", r))
    fig = _figure(6.0 * max(1, len(relevances)), 4.5)
    colors = {"visual": _BLUE, "hybrid_no_label": _GREEN, "hybrid_all_leaky": "#fdae61", "random": "#777777"}
    for i, relevance in enumerate(relevances):
        ax = fig.add_subplot(1, len(relevances), i + 1)
        for key, curve in result.curves.items():
            method, rel = key.split("/")
            if rel != relevance:
                continue
            ks = sorted(curve)
            label = method + (" (leaks label)" if method == "hybrid_all_leaky" else "")
            ax.plot(ks, [curve[k] for k in ks], marker="o", ms=6 if method == "visual" else 3, label=label,
                    color=colors.get(method), linestyle="--" if method == "random" else "-",
                    linewidth=4 if method == "visual" else 1.5, alpha=0.6 if method == "visual" else 1.0)
        ax.set_xlabel("K")
        ax.set_ylabel("precision@K")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(1, 11))
        ax.grid(alpha=0.3)
        ax.set_title(f"relevance: same {relevance}{_title_suffix(result.report)}", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, target)


def plot_precision_hist(result: EvaluationResult, target: Path) -> None:
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    chosen = [m for m in result.methods if m.relevance == "artist" and m.method in ("visual", "hybrid_no_label")]
    edges = np.linspace(-0.1, 1.1, 7)
    width = 0.18 / max(1, len(chosen))
    for j, res in enumerate(chosen):
        counts, _ = np.histogram(res.per_query["precision@5"], bins=edges)
        centers = (edges[:-1] + edges[1:]) / 2 + (j - (len(chosen) - 1) / 2) * width
        ax.bar(centers, counts, width=width, label=f"{res.method} (mean {res.mean('precision@5'):.3f})",
               color=[_BLUE, _GREEN][j % 2])
    rand = next((r for r in result.random if r["relevance"] == "artist" and r["k"] == 5), None)
    if rand is not None:
        ax.axvline(rand["precision_at_k"], color="#777777", linestyle="--",
                   label=f"random mean {rand['precision_at_k']:.3f}")
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("precision@5 of one query (same artist)")
    ax.set_ylabel("queries")
    ax.set_title("Per-query precision@5" + _title_suffix(result.report), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, target)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def plot_pixel(result: EvaluationResult, target: Path) -> None:
    pixel = result.pixel
    fig = _figure(11.0, 4.2)
    for i, (name, top, rand) in enumerate((
        ("SSIM (higher = more alike)", pixel.ssim.ravel(), pixel.random_ssim),
        ("RMSE (lower = more alike)", pixel.rmse.ravel(), pixel.random_rmse),
    )):
        ax = fig.add_subplot(1, 2, i + 1)
        top, rand = top[np.isfinite(top)], rand[np.isfinite(rand)]
        both = np.concatenate([top, rand]) if len(top) + len(rand) else np.zeros(1)
        bins = np.linspace(both.min(), both.max() + 1e-9, 31)
        ax.hist(rand, bins=bins, alpha=0.55, color="#777777", label=f"random pairs (mean {_mean(rand):.3f})")
        ax.hist(top, bins=bins, alpha=0.55, color=_BLUE, label=f"query vs top {pixel.top} (mean {_mean(top):.3f})")
        ax.set_xlabel(name)
        ax.set_ylabel("pairs")
        ax.legend(fontsize=8)
        ax.set_title(f"{name.split()[0]}, {pixel.size}×{pixel.size} grayscale{_title_suffix(result.report)}",
                     fontsize=10)
    fig.tight_layout()
    _save(fig, target)


def _thumb(path: Path, side: int = 160) -> np.ndarray:
    try:
        with Image.open(readable(path)) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((side, side))
            canvas = Image.new("RGB", (side, side), (255, 255, 255))
            canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
            return np.asarray(canvas)
    except (OSError, ValueError):
        return np.full((side, side, 3), 230, dtype=np.uint8)


def _caption(text: str, width: int = 22) -> str:
    text = text or "(unknown artist)"
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_examples(result: EvaluationResult, image_path: Callable[[str], Path], target: Path) -> None:
    examples = result.examples
    n_rows = max(1, len(examples))
    n_cols = 1 + max((len(e["results"]) for e in examples), default=5)
    fig = _figure(2.0 * n_cols, 2.35 * n_rows)
    for r, example in enumerate(examples):
        cells = [(example, None)] + [(res, res["same_artist"]) for res in example["results"]]
        for c, (item, same) in enumerate(cells):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            ax.imshow(_thumb(image_path(item["uuid"])))
            ax.set_xticks([])
            ax.set_yticks([])
            color = _BLUE if same is None else (_GREEN if same else _RED)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(5)
            if same is None:
                title = f"QUERY {item['objectid']}\n{_caption(item['artist'])}"
            else:
                title = f"#{c} {item['score']:.2f}\n{_caption(item['artist'])}"
            ax.set_title(title, fontsize=7, color=color, parse_math=False)  # catalog text is data, not mathtext
    if not examples:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no labelled query", ha="center", va="center")
        ax.axis("off")
    fig.suptitle("Visual search examples: green = same artist, red = different" + _title_suffix(result.report),
                 fontsize=9, parse_math=False)
    fig.tight_layout()
    _save(fig, target, dpi=80)


__all__ = ["plot_examples", "plot_pixel", "plot_precision_curves", "plot_precision_hist"]
