"""PNG contact sheet of a search: the query image, then each result with title / artist / score.

Plain Python (matplotlib's Agg canvas, no pyplot state, no display needed). The query tile comes
first with a red frame (and the face crop box drawn when the search used one); a result whose image
file is missing gets a grey placeholder. The file is written atomically.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from .storage import atomic_path, readable

THUMB_PX = 256  # longest side of a tile's image before plotting (keeps big photos cheap)


def _thumbnail(source: Any) -> Image.Image | None:
    """A small RGB copy of a path / bytes / PIL image; None when it cannot be read."""
    try:
        if isinstance(source, Image.Image):
            width = source.size[0]
            image = source.convert("RGB")
        else:
            src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else readable(source)
            with Image.open(src) as opened:
                width = opened.size[0]
                opened.draft("RGB", (THUMB_PX, THUMB_PX))
                image = opened.convert("RGB")
        image.thumbnail((THUMB_PX, THUMB_PX))
        image.info["artsim_scale"] = image.size[0] / max(1, width)  # full-resolution pixels -> tile pixels
        return image
    except Exception:  # noqa: BLE001 - a missing tile must not stop the sheet
        return None


def _wrap(text: str, width: int, lines: int) -> list[str]:
    wrapped = textwrap.wrap(text, width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: max(1, width - 1)] + "…"
    return wrapped


def save_grid(
    query_image: Any,
    results: Sequence[Any],
    path: Path | str,
    *,
    query_caption: str = "query",
    face_box: Sequence[float] | None = None,
    columns: int = 6,
    tile_inches: float = 2.6,
    dpi: int = 100,
) -> Path:
    """Write the sheet to ``path`` (PNG) and return it.

    ``query_image``: a path, bytes or PIL image (None: a placeholder). ``results``: objects with
    ``rank``, ``title``, ``artist``, ``date``, ``final``, ``visual`` and ``image_path``
    (:class:`~artsim_pipeline.core.search_results.SearchResult`). ``face_box``: ``(x0, y0, x1, y1)`` in
    the query image's pixels, drawn on the query tile.
    """
    tiles = 1 + len(results)
    ncols = max(1, min(columns, tiles))
    nrows = math.ceil(tiles / ncols)
    figure = Figure(figsize=(ncols * tile_inches, nrows * (tile_inches + 0.75)), dpi=dpi)
    FigureCanvasAgg(figure)
    chars = max(12, int(tile_inches * 11))

    def tile(index: int, image: Image.Image | None, caption: list[str], colour: str):
        ax = figure.add_subplot(nrows, ncols, index + 1)
        if image is not None:
            ax.imshow(image)
        else:
            ax.set_facecolor("#d0d0d0")
            ax.text(0.5, 0.5, "image missing", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3 if colour != "black" else 0.5)
        ax.set_title("\n".join(caption), fontsize=7.5, loc="center", pad=3)
        return ax

    query = _thumbnail(query_image) if query_image is not None else None
    ax = tile(0, query, ["QUERY", *_wrap(query_caption, chars, 2)], "red")
    if query is not None and face_box is not None:
        s = query.info.get("artsim_scale", 1.0)
        x0, y0, x1, y1 = (float(v) * s for v in face_box)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.5))

    for i, result in enumerate(results, start=1):
        title = f"{result.rank}. {result.title or 'Untitled'}"
        who = ", ".join(p for p in (result.artist, result.date) if p)
        caption = [*_wrap(title, chars, 1), *_wrap(who or "unknown artist", chars, 1),
                   f"score {result.final:.3f}  (visual {result.visual:.3f})"]
        image_path = getattr(result, "image_path", "")
        tile(i, _thumbnail(image_path) if image_path else None, caption, "black")

    figure.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return target


__all__ = ["save_grid"]
