"""``artsim bench notebook``: the old notebook's one-image-at-a-time loop vs artsim's batched pipeline.

Both process the same images (the given ones, upscaled to ``--size`` px like the notebook's IIIF
downloads) with the same backbones (default: the notebook's ``resnet101,efficientnet_b3,vit_b_16``;
``--weights random`` keeps the FLOPs without downloading weights):

* **notebook loop**: per image, MTCNN on the full-resolution image, crop the union of faces, then each
  model's fp32 forward pass on that one image;
* **artsim**: faces with :class:`~artsim_pipeline.core.faces.FaceDetector` (longer side ≤ 1024, batched
  by size) and each model through :func:`~artsim_pipeline.core.embedding.embed_images` (batched,
  decoding overlapped, channels_last, ``--precision``, default bf16).

Prints images/s of both and their ratio; writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import NOTEBOOK_MODELS, Settings
from ..core.embedding import embed_images
from ..core.faces import FaceDetector, union_box
from ..core.models import load_model
from ..core.storage import atomic_write_text


def prepare_images(source: Path, n: int, size: int, workdir: Path) -> list[Path]:
    """The first ``n`` images of ``source`` (sorted), resized to ``size`` px on the longer side."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if not files:
        raise SystemExit(f"artsim bench notebook: no images in {source}")
    out = []
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = size / max(image.size)
            resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        target = workdir / f"{path.stem}.jpg"
        resized.save(target, quality=90)
        out.append(target)
    return out


def notebook_loop(paths: list[Path], models: list, threshold: float) -> float:
    """Seconds for the notebook's loop: MTCNN at full resolution, crop, one fp32 forward per model."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    started = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            image = Image.open(path).convert("RGB")
            boxes, probs = mtcnn.detect(image)
            if boxes is not None:
                box = union_box(np.asarray(boxes, np.float32), np.asarray(probs, np.float32), threshold)
                if box is not None:
                    image = image.crop(tuple(int(v) for v in box))
            for model in models:
                model.module(model.preprocess(image)[None])
    return time.perf_counter() - started


def artsim_pipeline(paths: list[Path], models: list, threshold: float, precision: str, batch_size: int) -> float:
    """Seconds for artsim's path: batched face detection, then batched embedding per model."""
    detector = FaceDetector(threshold=threshold)
    started = time.perf_counter()
    crops = []
    for start in range(0, len(paths), 16):
        images = [Image.open(p).convert("RGB") for p in paths[start:start + 16]]
        crops.extend(result.crop_box for result in detector.detect(images))
    for model in models:
        items = [(i, str(p), crop) for i, (p, crop) in enumerate(zip(paths, crops))]
        embed_images(model, items, batch_size=batch_size, precision=precision)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artsim bench notebook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="directory of images")
    parser.add_argument("--n", type=int, default=32, help="images (default %(default)s)")
    parser.add_argument("--size", type=int, default=1200, help="longer side, like the notebook's downloads")
    parser.add_argument("--models", default=",".join(NOTEBOOK_MODELS))
    parser.add_argument("--weights", default="random", help="random (same FLOPs), pretrained or a file")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="JSON (default <data_lake>/reports/bench_notebook.json)")
    args = parser.parse_args(argv)
    threshold = Settings().face_threshold
    models = [load_model(name, weights=args.weights) for name in args.models.split(",") if name]
    with tempfile.TemporaryDirectory(prefix="artsim-bench-notebook-") as tmp:
        paths = prepare_images(args.images, args.n, args.size, Path(tmp))
        artsim_pipeline(paths[:2], models, threshold, args.precision, args.batch_size)  # warm-up
        loop_s = notebook_loop(paths, models, threshold)
        ours_s = artsim_pipeline(paths, models, threshold, args.precision, args.batch_size)
    result = {
        "images": len(paths), "size": args.size, "models": [m.name for m in models], "weights": args.weights,
        "precision": args.precision, "torch_threads": torch.get_num_threads(),
        "notebook_loop_images_per_s": round(len(paths) / loop_s, 2),
        "artsim_images_per_s": round(len(paths) / ours_s, 2),
        "speedup": round(loop_s / ours_s, 2),
    }
    print(f"{'path':<40}{'images/s':>10}")
    print(f"{'notebook loop (fp32, one at a time)':<40}{result['notebook_loop_images_per_s']:>10.2f}")
    print(f"{'artsim (batched, ' + args.precision + ')':<40}{result['artsim_images_per_s']:>10.2f}")
    print(f"speedup {result['speedup']:.2f}x on {len(paths)} images of {args.size} px, models {args.models}")
    out = args.out or Settings.from_env().data_lake / "reports" / "bench_notebook.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
