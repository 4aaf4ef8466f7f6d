"""Small NGA-shaped opendata snapshots for tests: the five CSVs (+ optional JPEG images)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NGA_MIRROR = SHARED_DATA / "nga_mirror_eval"
NGA_CATALOG = SHARED_DATA / "nga_catalog" / "nga_paintings_catalog.csv"

OBJECT_COLUMNS = ["objectid", "uuid", "title", "displaydate", "beginyear", "endyear", "medium", "attribution",
                  "attributioninverted", "classification", "extra_column"]
IMAGE_COLUMNS = ["uuid", "iiifurl", "iiifthumburl", "viewtype", "sequence", "width", "height", "maxpixels",
                 "openaccess", "created", "modified", "depictstmsobjectid", "assistivetext"]


@dataclass
class Painting:
    """One object row plus its primary image and optional artist constituent / style terms."""

    objectid: int
    title: str = "Untitled"
    attribution: str = "Test Painter"
    classification: str = "Painting"
    width: int = 400
    height: int = 300
    openaccess: str = "1"
    viewtype: str = "primary"
    artist: str | None = None
    styles: list[str] = field(default_factory=list)
    medium: str = "oil on canvas"
    beginyear: int | None = 1650
    modified: str = "2024-01-01"
    iiif: bool = True

    @property
    def uuid(self) -> str:
        return f"u{self.objectid:08d}-test"


def _csv(rows: list[dict], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue().encode()


def nga_csvs(paintings: list[Painting], iiif_base: str = "https://api.nga.gov/iiif") -> dict[str, bytes]:
    """The five CSV files (name -> bytes) describing ``paintings``."""
    objects, images, constituents, links, terms = [], [], {}, [], []
    for p in paintings:
        objects.append({
            "objectid": p.objectid, "uuid": f"obj-{p.objectid}", "title": p.title, "displaydate": str(p.beginyear or ""),
            "beginyear": p.beginyear or "", "endyear": p.beginyear or "", "medium": p.medium,
            "attribution": p.attribution, "attributioninverted": p.attribution, "classification": p.classification,
            "extra_column": "ignored, with a, comma and \"quotes\"\nand a newline",
        })
        images.append({
            "uuid": p.uuid, "iiifurl": f"{iiif_base}/{p.uuid}" if p.iiif else "", "viewtype": p.viewtype,
            "sequence": 0, "width": p.width, "height": p.height, "openaccess": p.openaccess,
            "modified": p.modified, "depictstmsobjectid": p.objectid,
        })
        if p.artist:
            cid = constituents.setdefault(p.artist, 5000 + len(constituents))
            links.append({"objectid": p.objectid, "constituentid": cid, "displayorder": 1, "roletype": "artist"})
        for i, style in enumerate(p.styles):
            terms.append({"termid": p.objectid * 10 + i, "objectid": p.objectid, "termtype": "Style", "term": style})
    return {
        "objects": _csv(objects, OBJECT_COLUMNS),
        "published_images": _csv(images, IMAGE_COLUMNS),
        "constituents": _csv(
            [{"constituentid": cid, "preferreddisplayname": name, "forwarddisplayname": name} for name, cid in constituents.items()],
            ["constituentid", "preferreddisplayname", "forwarddisplayname"],
        ),
        "objects_constituents": _csv(links, ["objectid", "constituentid", "displayorder", "roletype", "role"]),
        "objects_terms": _csv(terms, ["termid", "objectid", "termtype", "term"]),
    }


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48), quality: int = 85) -> bytes:
    """A deterministic, distinct JPEG (smooth colour field plus a seeded pattern)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    freq = rng.uniform(0.02, 0.2, 3)
    pixels = np.stack([(base[c] + 80 * np.sin(freq[c] * (x + 2 * y) + seed)) % 255 for c in range(3)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_mirror(root: Path, paintings: list[Painting], with_images: bool = True) -> Path:
    """Write an NGA-like local mirror: ``data/*.csv`` and ``images/<uuid>.jpg``."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, body in nga_csvs(paintings).items():
        (root / "data" / f"{name}.csv").write_bytes(body)
    if with_images:
        (root / "images").mkdir(exist_ok=True)
        for p in paintings:
            (root / "images" / f"{p.uuid}.jpg").write_bytes(jpeg_bytes(p.objectid, (p.width, p.height)))
    return root


def painting_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128]
    channels = [(rng.uniform(0, 255) + 90 * np.sin(rng.uniform(0.03, 0.3) * (x + rng.uniform(0.5, 2) * y))) % 255 for _ in range(3)]
    return Image.fromarray(np.stack(channels, -1).astype(np.uint8))


def publish(server, iiif, paintings: list[Painting], images: dict[int, Image.Image]) -> None:
    for name, body in nga_csvs(paintings, iiif_base=f"{server.url}/iiif").items():
        server.routes[f"/data/{name}.csv"] = body
    for p in paintings:
        iiif.add(p.uuid, images[p.objectid])


def update_v1() -> list[Painting]:
    """NGA v1 of the update scenarios: 7 paintings of two painters (3 batches at ``batch_size=3``)."""
    return [Painting(i, width=96, height=80, artist=f"Painter {i % 2}") for i in range(1, 8)]


def update_v2(v1: list[Painting]) -> list[Painting]:
    """NGA v2 of the update scenarios: painting 2's image changed (batch 0), paintings 8 and 9 new (batch 3)."""
    changed = [Painting(2, width=96, height=80, artist="Painter 0", modified="2025-06-01")]
    return changed + [p for p in v1 if p.objectid != 2] + [Painting(i, width=96, height=80) for i in (8, 9)]
