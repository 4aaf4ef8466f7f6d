"""Simulated photos of a painting: what a visitor's phone makes of it (plain Python, no Dagster, no torch).

Identification (:mod:`~artsim_pipeline.core.identify`) is calibrated and benchmarked on photos of the
collection's own paintings, so the photos must look like the ones people take: :func:`simulate_photo`
applies one named distortion (:data:`DISTORTIONS`) with seeded random strength, then re-encodes the
result as a JPEG (quality 80-92, as a phone does; the ``jpeg`` distortion itself goes down to 25-45):

==============  =======================================================================================
distortion      what it does
==============  =======================================================================================
``perspective`` the photo taken off-axis: each corner moves up to 9 % of the side, the rest is wall
``crop``        only part of the painting: 72-92 % of each side, anywhere
``rotation``    the phone held askew: 3-10 degrees either way, the corners filled with a wall colour
``blur``        out of focus or shaken: a Gaussian blur of 0.4-1 % of the side
``noise``       a dark room: Gaussian sensor noise of 6-16 grey levels
``colour_cast`` warm or cold light: each channel scaled by 0.82-1.18, brightness by 0.8-1.15
``glare``       a reflection on the varnish: a bright soft spot of 20-45 % of the side
``frame``       the frame and the wall around it: a 4-9 % frame, the painting filling 55-80 % of the photo,
                about centred (as a visitor aims: off centre by at most 15 % of the free space)
``jpeg``        a heavily compressed copy: JPEG quality 25-45
``phone``       all of it mildly at once: frame, perspective, rotation, colour cast, noise and glare
==============  =======================================================================================

Every photo is a pure function of (image, distortion, seed): :func:`simulate_photo` draws from its own
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DISTORTIONS = ("perspective", "crop", "rotation", "blur", "noise", "colour_cast", "glare", "frame", "jpeg", "phone")


def _wall(rng: np.random.Generator) -> tuple[int, int, int]:
    base = int(rng.integers(150, 235))
    tint = rng.integers(-18, 18, size=3)
    return tuple(int(np.clip(base + t, 0, 255)) for t in tint)  # type: ignore[return-value]


def _perspective(image: Image.Image, rng: np.random.Generator, strength: float = 0.09) -> Image.Image:
    w, h = image.size
    pad = int(round(max(w, h) * strength))
    canvas = Image.new("RGB", (w + 2 * pad, h + 2 * pad), _wall(rng))
    canvas.paste(image, (pad, pad))
    W, H = canvas.size
    src = [(pad, pad), (pad + w, pad), (pad + w, pad + h), (pad, pad + h)]
    # where each corner of the painting lands in the photo: moved inwards/outwards by up to `pad`
    dst = [(x + float(rng.uniform(-pad, pad)), y + float(rng.uniform(-pad, pad))) for x, y in src]
    coeffs = _perspective_coeffs(dst, src)  # maps output (photo) coordinates to input (canvas) ones
    return canvas.transform((W, H), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC,
                            fillcolor=_wall(rng))


def _perspective_coeffs(out_pts: list[tuple[float, float]], in_pts: list[tuple[float, float]]) -> list[float]:
    rows, rhs = [], []
    for (x, y), (u, v) in zip(out_pts, in_pts):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64)).tolist()


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * rng.uniform(0.72, 0.92)), int(h * rng.uniform(0.72, 0.92))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def _rotation(image: Image.Image, rng: np.random.Generator, low: float = 3.0, high: float = 10.0) -> Image.Image:
    angle = float(rng.uniform(low, high)) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=_wall(rng))


def _blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=max(image.size) * float(rng.uniform(0.004, 0.01))))


def _noise(image: Image.Image, rng: np.random.Generator, low: float = 6.0, high: float = 16.0) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, float(rng.uniform(low, high)), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _colour_cast(image: Image.Image, rng: np.random.Generator, spread: float = 0.18) -> Image.Image:
    gains = rng.uniform(1 - spread, 1 + spread, size=3) * rng.uniform(0.8, 1.15)
    pixels = np.asarray(image, dtype=np.float32) * gains[None, None, :]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _glare(image: Image.Image, rng: np.random.Generator, low: float = 0.2, high: float = 0.45) -> Image.Image:
    w, h = image.size
    pixels = np.asarray(image, dtype=np.float32)
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    radius = max(w, h) * float(rng.uniform(low, high)) / 2
    yy, xx = np.mgrid[0:h, 0:w]
    spot = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2)))[..., None]
    pixels = pixels + spot * float(rng.uniform(0.55, 0.85)) * (255.0 - pixels)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _frame(image: Image.Image, rng: np.random.Generator, low: float = 0.55, high: float = 0.8) -> Image.Image:
    w, h = image.size
    border = max(2, int(round(max(w, h) * rng.uniform(0.04, 0.09))))
    colour = tuple(int(c) for c in rng.integers(40, 200, size=3) * np.array([1.0, 0.8, 0.45]))
    framed = Image.new("RGB", (w + 2 * border, h + 2 * border), colour)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(framed)
    draw.rectangle((border // 2, border // 2, w + border + border // 2, h + border + border // 2),
                   outline=tuple(min(255, c + 40) for c in colour), width=max(1, border // 4))
    framed.paste(image, (border, border))
    share = float(rng.uniform(low, high))  # of the photo's longer side
    fw, fh = framed.size
    side = int(round(max(fw, fh) / share))
    W, H = (side, int(side * rng.uniform(0.75, 1.0))) if fw >= fh else (int(side * rng.uniform(0.75, 1.0)), side)
    W, H = max(W, fw), max(H, fh)
    wall = Image.new("RGB", (W, H), _wall(rng))
    x0 = int(round((W - fw) * (0.5 + rng.uniform(-0.15, 0.15))))
    y0 = int(round((H - fh) * (0.5 + rng.uniform(-0.15, 0.15))))
    wall.paste(framed, (x0, y0))
    return wall


def _phone(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = _frame(image, rng, 0.7, 0.9)
    image = _perspective(image, rng, 0.05)
    image = _rotation(image, rng, 1.0, 4.0)
    image = _colour_cast(image, rng, 0.08)
    image = _glare(image, rng, 0.15, 0.3)
    return _noise(image, rng, 3.0, 8.0)


_APPLY: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "perspective": _perspective, "crop": _crop, "rotation": _rotation, "blur": _blur, "noise": _noise,
    "colour_cast": _colour_cast, "glare": _glare, "frame": _frame, "jpeg": lambda image, rng: image, "phone": _phone,
}


def simulate_photo_bytes(image: Image.Image, distortion: str, seed: int) -> bytes:
    """The JPEG file of a simulated photo of ``image`` with ``distortion`` (:data:`DISTORTIONS`), seeded."""
    if distortion not in _APPLY:
        raise ValueError(f"unknown distortion {distortion!r}; expected one of {', '.join(DISTORTIONS)}")
    rng = np.random.default_rng(seed)
    photo = _APPLY[distortion](image.convert("RGB"), rng)
    quality = int(rng.integers(25, 46)) if distortion == "jpeg" else int(rng.integers(80, 93))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def simulate_photo(image: Image.Image, distortion: str, seed: int) -> Image.Image:
    """A simulated photo (RGB) of ``image`` with ``distortion`` (:data:`DISTORTIONS`), seeded, JPEG re-encoded."""
    with Image.open(io.BytesIO(simulate_photo_bytes(image, distortion, seed))) as decoded:
        return decoded.convert("RGB")


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    """The central ``fraction`` of each side of ``image`` (where a visitor's photo has the painting)."""
    w, h = image.size
    cw, ch = max(1, int(round(w * fraction))), max(1, int(round(h * fraction)))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def photo_plan(objectids: np.ndarray, per_painting: int, seed: int) -> list[tuple[int, str, int]]:
    """``(objectid, distortion, photo seed)`` for ``per_painting`` photos of each painting: the distortions
    cycle over the paintings (so each is used about equally), every photo has its own seed."""
    plan = []
    for i, oid in enumerate(np.asarray(objectids, dtype=np.int64).tolist()):
        for j in range(per_painting):
            distortion = DISTORTIONS[(i * per_painting + j) % len(DISTORTIONS)]
            plan.append((int(oid), distortion, int(seed) * 1_000_003 + i * per_painting + j))
    return plan


__all__ = ["DISTORTIONS", "centre_crop", "photo_plan", "simulate_photo", "simulate_photo_bytes"]
