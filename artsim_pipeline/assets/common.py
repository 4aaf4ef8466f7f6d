"""Helpers every asset module shares (so asset modules never import each other).

* :func:`progress_logger`: progress lines to Dagster's log (the UI) and artsim's logger (``artsim run``).
* :func:`lake_path` and :data:`OWNERS`: how the asset pages show paths and owners.
* :func:`share_cores`: torch's threads for a model step, the machine's cores shared among the runs in progress.
"""

from __future__ import annotations

import logging

from dagster import AssetExecutionContext, DagsterRunStatus, MetadataValue, RunsFilter

from ..core.faces import available_cpus
from ..core.lake import DataLake

log = logging.getLogger("artsim_pipeline.assets")

#: Executors whose steps run on the machine of the run (several runs at once share its cores).
LOCAL_EXECUTORS = ("in_process", "multiprocess")

#: Who answers for the assets (the asset pages' Owners): the team that runs the pipeline.
OWNERS = ["team:artsim"]


def lake_path(lake: DataLake, path) -> MetadataValue:
    """``path`` as metadata, relative to the lake's root (``tables/filtered_paintings.parquet``), so a copied
    or moved lake shows paths that still hold; a path outside the lake stays as it is."""
    text, root = str(path), str(lake.root).rstrip("/")
    if text.startswith(root + "/"):
        text = text[len(root) + 1:]
    return MetadataValue.path(text)


def progress_logger(context: AssetExecutionContext, label: str):
    """A ``progress`` callable: lines go to Dagster's log (the UI) and artsim's logger (``artsim run``)."""

    def report(line: str) -> None:
        context.log.info(f"{label}: {line}")
        log.info(f"{label}: {line}")

    return report


def share_cores(context: AssetExecutionContext, executor: str) -> int:
    """Set torch's intra-op threads for this step to the cores divided among the runs in progress on this instance,
    and return the number: the automation runs several batches at once (the run queue allows 4), and 4 runs of 2
    threads each on 2 cores leave torch's threads waiting on one another; 4 runs of 1 thread use the same cores
    without it. A run alone (``artsim run``, a one-batch refresh) gets every core. Runs whose steps execute
    elsewhere (Celery, Kubernetes: ``executor``) keep torch's default."""
    import torch  # lazy: only model steps call this, and the code location loads without torch

    if executor not in LOCAL_EXECUTORS:
        return torch.get_num_threads()
    runs = context.instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    threads = max(1, available_cpus() // max(1, runs))
    torch.set_num_threads(threads)
    return threads
