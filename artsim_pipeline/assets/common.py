"""Helpers every asset module shares (so asset modules never import each other).

* :func:`current_collection`: the collection's aligned vectors for these settings (the core reader
  :func:`artsim_pipeline.core.lake_reads.current_collection`, read once per run);
* :func:`progress_logger`: progress lines to Dagster's log (the UI) and artsim's logger (``artsim run``).
"""

from __future__ import annotations

import logging

from dagster import AssetExecutionContext

from ..config import Settings
from ..core.lake import DataLake

log = logging.getLogger("artsim_pipeline.assets")


def current_collection(settings: Settings, lake: DataLake, all_blocks: bool = False) -> dict:
    """The aligned vectors (per variant) of the paintings now in the catalog: the fusion blocks of
    ``ARTSIM_TAPS``, or with ``all_blocks`` every stored block (the evaluation's tap-set ablations)."""
    from ..core.lake_reads import current_collection as read_collection

    return read_collection(lake, settings.models, tap_set=None if all_blocks else settings.taps)


def progress_logger(context: AssetExecutionContext, label: str):
    """A ``progress`` callable: lines go to Dagster's log (the UI) and artsim's logger (``artsim run``)."""

    def report(line: str) -> None:
        context.log.info(f"{label}: {line}")
        log.info(f"{label}: {line}")

    return report
