"""``similarity_head``: a linear projection of the fused vectors, learned from artist labels.

Plain Python (torch + numpy, no Dagster). This is the notebook's "fine-tuning" done for real: it is
trained on cached fused vectors (no image passes), with a supervised contrastive loss (SupCon,
Khosla et al. 2020) that pulls paintings by the same artist together and pushes the others apart.

Model: ``y = normalise(W x)`` with ``W`` a ``[d, d]`` matrix **initialised at the identity**, so an
untrained (0-epoch) head is exactly the PCA fusion it sits on, and training can only move away from
it as far as the labels justify.

Training (:func:`train_head`), deterministic for a given seed on CPU:

* Adam, learning rate ``LEARNING_RATE``, temperature ``TEMPERATURE``, shuffled mini-batches of
  ``BATCH_SIZE`` vectors; rows with an empty label (no artist) are not used;
* the number of epochs is chosen on artists the head never trains on: ``VALIDATION_SHARE`` of the
  artists with two paintings or more are held back (:func:`heldout_artists`, the split the
  evaluation uses too), the head trains on the rest for up to ``max_epochs``
  and the full-ranking mAP on the held-back artists is measured every ``CHECK_EVERY`` epochs; the
  best epoch count (0 when training never beats the identity) is then trained again from the
  identity on every labelled artist.

File format (:func:`save_head` / :func:`load_head`): one ``.npz`` with ``weight`` (float32
``[d, d]``) and ``info_json`` (the :attr:`SimilarityHead.info` dict: epochs, best epoch, artists,
seconds, validation mAP before/after, seed).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .metrics import evaluate_retrieval
from .scoring import text_codes
from .storage import atomic_write_bytes, readable

HEAD_FORMAT_VERSION = 1
LEARNING_RATE = 1e-4
TEMPERATURE = 0.1
BATCH_SIZE = 256
VALIDATION_SHARE = 0.25
CHECK_EVERY = 5
_EPS = 1e-12


@dataclass
class SimilarityHead:
    """A trained head: ``weight`` ``[d_out, d_in]`` and what the training did (``info``)."""

    weight: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Project ``[n, d]`` fused vectors: float32 ``[n, d]``, L2-normalised rows."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.dim:
            raise ValueError(f"similarity head expects {self.dim}-d vectors, got {x.shape[1]}-d")
        y = x @ self.weight.T
        return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), _EPS)).astype(np.float32)


def _supcon_epochs(x: np.ndarray, codes: np.ndarray, epochs: int, seed: int, learning_rate: float,
                   check: Any = None) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Train ``W`` (from the identity) for ``epochs``; ``check(W)`` every ``CHECK_EVERY`` epochs.

    Returns the final ``W`` and ``[(epoch, check value)]`` (with epoch 0 = the identity) when
    ``check`` is given; the best ``W`` is kept by the caller through those values.
    """
    # torch here: the evaluation imports this module; only training needs torch
    import torch

    threads = torch.get_num_threads()
    # A [d, d] matrix on a few hundred vectors: thread hand-offs cost more than they share (measured:
    # 0.6 s on one thread vs 13 s on two busy cores for 10 epochs), so train on one thread.
    torch.set_num_threads(1)
    try:
        return _train(torch, x, codes, epochs, seed, learning_rate, check)
    finally:
        torch.set_num_threads(threads)


def _train(torch: Any, x: np.ndarray, codes: np.ndarray, epochs: int, seed: int, learning_rate: float,
           check: Any) -> tuple[np.ndarray, list[tuple[int, float]]]:
    d = x.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        weight = torch.nn.Parameter(torch.eye(d))
        optimiser = torch.optim.Adam([weight], lr=learning_rate)
        xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        ys = torch.from_numpy(codes)
        history: list[tuple[int, float]] = []
        if check is not None:
            history.append((0, float(check(np.eye(d, dtype=np.float32)))))
        for epoch in range(1, epochs + 1):
            for batch in torch.randperm(len(xs), generator=generator).split(BATCH_SIZE):
                z = torch.nn.functional.normalize(xs[batch] @ weight.T, dim=1)
                y = ys[batch]
                eye = torch.eye(len(batch), dtype=torch.bool)
                logits = (z @ z.T / TEMPERATURE).masked_fill(eye, -1e9)
                positives = (y[:, None] == y[None, :]) & ~eye
                has = positives.sum(1) > 0
                if not bool(has.any()):
                    continue
                log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
                loss = -((log_prob * positives).sum(1)[has] / positives.sum(1)[has]).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            if check is not None and epoch % CHECK_EVERY == 0:
                w = weight.detach().numpy().copy()
                history.append((epoch, float(check(w))))
        return weight.detach().numpy().astype(np.float32), history


def _map(vectors: np.ndarray, codes: np.ndarray) -> float:
    return float(evaluate_retrieval(vectors, codes.tolist(), ks=(5,))["map"])


# ---------------------------------------------------------------- the held-out artist split (one rule)

#: Share of the splittable artists held out by the learned-head evaluation (:mod:`.evaluation.learned`).
HELDOUT_SHARE = 1 / 3


def splittable_artists(labels: Sequence[str]) -> np.ndarray:
    """The artists (sorted labels, ``""`` = unlabelled) with at least two paintings: the only ones a
    held-out split can measure (an artist with one painting has no same-artist pair)."""
    keys = np.asarray([k for k in labels if k], dtype=object)
    if not len(keys):
        return np.zeros(0, dtype=object)
    names, counts = np.unique(keys, return_counts=True)
    return names[counts >= 2]


def heldout_artists(labels: Sequence[str], seed: int, share: float = HELDOUT_SHARE) -> list[str]:
    """THE held-out artist split, used by the head's epoch choice and by its evaluation alike: the first
    ``floor(n * share)`` of :func:`splittable_artists` in ``np.random.default_rng(seed)``'s permutation
    (sorted). ``labels`` are the catalog's ``artist_key`` values (one label rule)."""
    artists = splittable_artists(labels)
    n = int(len(artists) * share + 1e-9)
    return sorted(np.random.default_rng(seed).permutation(artists)[:n].tolist())


def split_rows(labels: Sequence[str], held: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows to train on: labelled paintings of the other artists, held-out rows: paintings of ``held``)."""
    keys = np.asarray(list(labels), dtype=object)
    is_held = np.isin(keys, np.asarray(list(held), dtype=object))
    return np.flatnonzero((keys != "") & ~is_held), np.flatnonzero(is_held)


def train_head(vectors: np.ndarray, labels: Sequence[str], max_epochs: int, *, seed: int = 0,
               learning_rate: float = LEARNING_RATE) -> SimilarityHead:
    """Train a head on ``vectors`` ``[n, d]`` with ``labels`` (artist keys; ``""`` = unlabelled).

    ``max_epochs`` bounds the training; the epoch count actually used is chosen on held-back
    artists (see the module docstring). ``max_epochs=0`` returns the identity head.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"train_head needs [n, d] vectors and n labels, got {x.shape} and {len(labels)}")
    if max_epochs < 0:
        raise ValueError(f"max_epochs must be >= 0, got {max_epochs}")
    started = time.perf_counter()
    codes = text_codes([str(v) if v else "" for v in labels])
    labelled = np.flatnonzero(codes >= 0)
    artists = np.unique(codes[labelled])
    info: dict[str, Any] = {
        "format_version": HEAD_FORMAT_VERSION, "max_epochs": int(max_epochs), "seed": int(seed),
        "n_vectors": int(len(labelled)), "n_artists": int(len(artists)), "loss": "supervised contrastive",
        "learning_rate": learning_rate, "temperature": TEMPERATURE,
    }
    identity = np.eye(x.shape[1], dtype=np.float32)
    label_list = [str(v) if v else "" for v in labels]
    held_names = heldout_artists(label_list, seed, VALIDATION_SHARE)
    n_val = len(held_names)
    if max_epochs == 0 or len(artists) < 4 or n_val < 2:
        reason = "ARTSIM_EPOCHS=0" if max_epochs == 0 else f"only {len(artists)} labelled artists"
        info.update(epochs=0, best_epoch=0, note=f"identity head ({reason})",
                    train_seconds=round(time.perf_counter() - started, 3))
        return SimilarityHead(identity, info)

    inner_train, inner_val = split_rows(label_list, held_names)
    val_x, val_codes = x[inner_val], codes[inner_val]
    _, history = _supcon_epochs(x[inner_train], codes[inner_train], max_epochs, seed, learning_rate,
                                check=lambda w: _map(val_x @ w.T, val_codes))
    best_epoch, best_map = max(history, key=lambda item: (item[1], -item[0]))
    weight = identity
    if best_epoch > 0:
        weight, _ = _supcon_epochs(x[labelled], codes[labelled], best_epoch, seed, learning_rate)
    info.update(
        epochs=int(best_epoch), best_epoch=int(best_epoch), validation_artists=int(n_val),
        validation_map_identity=round(history[0][1], 5), validation_map_best=round(best_map, 5),
        validation_curve=[[e, round(v, 5)] for e, v in history],
        train_seconds=round(time.perf_counter() - started, 3),
    )
    return SimilarityHead(weight, info)


def save_head(head: SimilarityHead, path: Path | str) -> None:
    """Write ``head`` as one ``.npz`` file, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, weight=head.weight.astype(np.float32),
             info_json=np.array(json.dumps({**head.info, "format_version": HEAD_FORMAT_VERSION}, sort_keys=True)))
    atomic_write_bytes(path, buffer.getvalue())


def load_head(path: Path | str) -> SimilarityHead:
    """Read a head written by :func:`save_head`."""
    with np.load(readable(path), allow_pickle=False) as data:
        info = json.loads(str(data["info_json"]))
        if info.get("format_version") != HEAD_FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported similarity head format {info.get('format_version')!r}")
        return SimilarityHead(np.asarray(data["weight"], dtype=np.float32), info)
