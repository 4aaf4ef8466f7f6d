"""Helpers every asset module shares (so asset modules never import each other).

* :func:`progress_logger`: progress lines to Dagster's log (the UI) and artsim's logger (``artsim run``).
* :func:`lake_path` and :data:`OWNERS`: how the asset pages show paths and owners.
"""

from __future__ import annotations

import logging

from dagster import AssetExecutionContext, MetadataValue

from ..core.lake import DataLake

log = logging.getLogger("artsim_pipeline.assets")

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
