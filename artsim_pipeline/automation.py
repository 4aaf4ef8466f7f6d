"""Declarative automation: Dagster's own conditions decide what runs when NGA changes.

Turn on the ``artsim_automation`` sensor (UI → Automation) and the daemon keeps the lake up to date:

* ``nga_opendata`` is observed at ``ARTSIM_REFRESH_CRON`` (cheap conditional requests); a new data
  version makes ``raw_objects`` → ``filtered_paintings`` run (:data:`CATALOG`, eager);
* ``filtered_paintings`` records each batch's fingerprint on ``image_batch``; a batch whose fingerprint
  changed, or a new batch, makes its ``image_cache`` → ``face_crops`` → ``embeddings_*`` run
  (:data:`BATCH_ENTRY`: data-version aware, so unchanged batches stay put);
* when batches updated, ``pca_model`` → ``faiss_index`` → ``eval_report`` run once they are all done
  (:data:`COLLECTION`, eager: it waits while any batch is missing or in progress);
* a batch whose images failed to download (the ``image_cache`` check ``no_failed_images`` fails) is
  retried at the next ``ARTSIM_REFRESH_CRON`` tick.

On a fresh lake the first evaluation materializes whatever is missing, so turning the sensor on is
the one action that brings a new lake all the way up. ``artsim run`` does the same work in process,
from the same truth (Dagster's stale/missing status; see :mod:`artsim_pipeline.runner`).
"""

from __future__ import annotations

from dagster import AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

AC = AutomationCondition

# Missing on the very first evaluation (a fresh lake: `since_last_handled` resets on the initial
# evaluation, so this clause stays outside it) or newly missing later (a new batch).
_FIRST_MISSING = (AC.missing() & AC.initial_evaluation()).with_label("missing when automation starts")
_READY = ~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()

CATALOG = (
    ((AC.newly_missing() | AC.any_deps_updated() | AC.code_version_changed()).since_last_handled() | _FIRST_MISSING)
    & _READY
).with_label("catalog: missing, source or code changed")
"""``raw_objects`` and ``filtered_paintings``: eager, plus a fresh lake and new code versions."""

BATCH_ENTRY = (
    ((AC.newly_missing() | AC.any_deps_match(AC.data_version_changed()).with_label("batch fingerprint changed")
      | AC.code_version_changed()).since_last_handled() | _FIRST_MISSING)
    & _READY
).with_label("batch: new, changed or new code")
"""``image_cache``: only batches whose ``image_batch`` data version changed (not every batch that was
re-observed), new batches and new code."""


def batch_step() -> AutomationCondition:
    """``face_crops`` / ``embeddings_*``: run with their batch's upstream step, or when its output changed."""
    return (
        ((AC.newly_missing() | AC.any_deps_match(AC.data_version_changed() | AC.will_be_requested()).with_label(
            "upstream batch step changed or runs now") | AC.code_version_changed()).since_last_handled()
         | _FIRST_MISSING)
        & _READY
    ).with_label("batch step: upstream changed, new or new code")


def retry_failed_images(cron: str) -> AutomationCondition:
    """``image_cache`` partitions whose ``no_failed_images`` check failed, again at each ``cron`` tick."""
    return (
        AC.any_checks_match(AC.check_failed()) & AC.cron_tick_passed(cron).since_last_handled() & _READY
    ).with_label("retry failed images")


COLLECTION = (AC.eager() | ((AC.code_version_changed().since_last_handled() | _FIRST_MISSING) & _READY)).with_label(
    "collection: after the batches"
)
"""``pca_model``, ``faiss_index``, ``eval_report``."""


def source_observation(cron: str) -> AutomationCondition:
    """Observe ``nga_opendata`` at each ``cron`` tick and on the first evaluation."""
    return (AC.cron_tick_passed(cron).since_last_handled() | AC.initial_evaluation()).with_label(
        f"observe at {cron}"
    )


artsim_automation = AutomationConditionSensorDefinition(
    "artsim_automation",
    target="*",
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Keeps the lake up to date: observes NGA, refreshes the catalog, runs new or changed batches, "
    "then the index and the evaluation (see each asset's automation condition).",
)
