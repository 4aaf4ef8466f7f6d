"""Declarative automation: Dagster's own conditions decide what runs when NGA changes.

Turn on the ``artsim_automation`` sensor (UI → Automation) and the daemon keeps the lake up to date:

* ``nga_opendata`` is observed at ``ARTSIM_REFRESH_CRON`` (cheap conditional requests); a new data
  version makes ``raw_objects`` → ``filtered_paintings`` run (:data:`CATALOG`, eager);
* ``filtered_paintings`` records each batch's fingerprint on ``image_batch``; a batch whose fingerprint
  changed, or a new batch, makes its ``image_cache`` → ``face_crops`` → ``embeddings_*`` run
  (:data:`BATCH_ENTRY`: data-version aware, so unchanged batches stay put);
* when batches updated (or the catalog's content changed), ``pca_model`` → ``faiss_index`` →
  ``eval_report`` run once they are all done (:data:`COLLECTION_ENTRY`: ``pca_model`` waits until the
  catalog exists and no batch is missing, requested or in progress — so on a fresh lake it never runs
  before the catalog and its batches; :data:`COLLECTION` for what follows it in the same run);
* ``eval_study`` (ablations, learned head, pixel metrics) is not part of a refresh: it runs when missing,
  on new code or settings and at :data:`STUDY_CRON` (:data:`STUDY`);
* a failed blocking asset check (the catalog's ``no_sudden_shrink``, a batch's ``embeddings_valid``,
  ``faiss_index``'s ``recall_at_10_vs_exact``) holds what is downstream of it (``_CHECKS_PASSED``), so
  the served index stays the last good one;
* a batch whose images failed to download (the ``image_cache`` check ``no_failed_images`` fails) is
  retried at the next ``ARTSIM_REFRESH_CRON`` tick.

On a fresh lake the first evaluation observes the source and materializes the catalog; the batches
follow once their partitions exist, then the collection: turning the sensor on is the one action that
brings a new lake all the way up (``test_automation_daemon.py`` does exactly that on a real webserver +
daemon). The sensor targets the observable source too (``AssetSelection.all(include_sources=True)``):
with ``"*"`` Dagster leaves sources to a second, default sensor and ``nga_opendata`` is never observed.
The source is also observed when its setting (``ARTSIM_NGA_SOURCE``, part of its code version)
changes. ``artsim run`` does the same work in process, from the same truth (Dagster's stale/missing
status; see :mod:`artsim_pipeline.runner`): what a condition asks beyond "missing or stale" is stated
once, next to it, as a :class:`RerunRule` the runner reads (:func:`rerun_rule`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    SkipReason,
    sensor,
)

AC = AutomationCondition

# Missing on the very first evaluation (a fresh lake: `since_last_handled` resets on the initial
# evaluation, so this clause stays outside it) or newly missing later (a new batch).
_FIRST_MISSING = (AC.missing() & AC.initial_evaluation()).with_label("missing when automation starts")
#: A failed blocking check upstream (the catalog's shrink guard, a batch's embeddings, the index's recall)
#: holds everything below it until the check passes again (assets/checks.py).
_CHECKS_PASSED = AC.all_deps_blocking_checks_passed()
_READY = ~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress() & _CHECKS_PASSED

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


#: A dependency's new data version written by a run that did not also run the target (as Dagster's own
#: ``any_deps_updated`` ignores such updates): within a batch's run, ``face_crops`` changes before its embeddings are
#: written, and a tick that reads the new face version after the embeddings' run ended, but the update cursor
#: from before their materialization, would request the embeddings again (seen on the mirror at 4 runs at once).
_CHANGED_ELSEWHERE = (AC.data_version_changed() & ~AC.executed_with_root_target()).with_label(
    "data version changed by another run")


def batch_step() -> AutomationCondition:
    """``face_crops`` / ``embeddings_*``: run with their batch's upstream step, or when its output changed."""
    return (
        ((AC.newly_missing() | AC.any_deps_match(_CHANGED_ELSEWHERE | AC.will_be_requested()).with_label(
            "upstream batch step changed or runs now") | AC.code_version_changed()).since_last_handled()
         | _FIRST_MISSING)
        & _READY
    ).with_label("batch step: upstream changed, new or new code")


def retry_failed_images(cron: str) -> AutomationCondition:
    """``image_cache`` partitions whose ``no_failed_images`` check failed, again at each ``cron`` tick."""
    return (
        AC.any_checks_match(AC.check_failed()) & AC.cron_tick_passed(cron).since_last_handled() & _READY
    ).with_label("retry failed images")


_CATALOG_SELECTION = AssetSelection.assets("filtered_paintings")
#: Upstream of the collection that must exist and be settled before ``pca_model`` runs. Dagster's own
#: ``any_deps_missing`` holds vacuously while no batch partition exists yet (a fresh lake), and lets a
#: dependency that will be requested in the same tick count as present; neither may start the collection.
_UPSTREAM_UNSETTLED = AC.any_deps_match(AC.missing() | AC.will_be_requested() | AC.in_progress()).with_label(
    "the catalog or a batch missing, requested or running")

COLLECTION_ENTRY = (
    ((AC.newly_missing()
      | AC.any_deps_updated().ignore(_CATALOG_SELECTION).with_label("a batch updated")
      | AC.any_deps_match(AC.data_version_changed()).allow(_CATALOG_SELECTION).with_label("catalog content changed")
      | AC.code_version_changed()).since_last_handled() | _FIRST_MISSING)
    & ~_UPSTREAM_UNSETTLED & ~AC.in_progress() & _CHECKS_PASSED
).with_label("collection: after the catalog and every batch")
"""``pca_model``: the first collection step. It depends on ``filtered_paintings`` (the catalog it reads) and on
every batch's embeddings; it waits until all of them exist and none is requested or running, then runs
when a batch updated, the catalog's content (its data version) changed, its code changed, or it is missing."""

COLLECTION = ((AC.eager() & _CHECKS_PASSED)
              | ((AC.code_version_changed().since_last_handled() | _FIRST_MISSING) & _READY)).with_label(
    "collection: after the batches"
)
"""``faiss_index``, ``similarity_head``, ``eval_report``, ``collection_map``: after ``pca_model``, in the same run."""


#: When the automation re-runs ``eval_study`` even without a code change (UTC; Sundays 05:00).
STUDY_CRON = "0 5 * * 0"
#: Tag of assets that a refresh does not re-run (``eval_study``, the asset pages show it): the automation runs them
#: when missing, on new code or at their cron (:data:`STUDY`), ``artsim run`` as :data:`STUDY_RERUN` says.
REFRESH_TAG = "artsim/refresh"

STUDY = (
    ((AC.code_version_changed() | AC.cron_tick_passed(STUDY_CRON)).since_last_handled()
     | _FIRST_MISSING
     # missing while its index runs now (or just changed): joins the collection's run on a fresh lake; a failed
     # study is not retried on every tick, only with the next index
     | (AC.missing() & AC.any_deps_match(AC.will_be_requested() | AC.data_version_changed())).with_label(
         "missing, and its index runs now or changed"))
    & _READY
).with_label(f"study: missing, new code or {STUDY_CRON}")
"""``eval_study``: not on every new batch (minutes of ablations and head training); on a fresh lake it runs
in the collection's run (missing while ``faiss_index`` is requested), then on new code, weekly, or on demand."""


@dataclass(frozen=True)
class RerunRule:
    """What re-runs an asset besides being missing, as ``artsim run`` reads its automation condition: the runner
    evaluates no conditions (it runs in process, from Dagster's stale status), so each condition above that
    asks more than "missing or stale" states here what it asks, and :func:`rerun_rule` is the one place the
    runner (:mod:`artsim_pipeline.runner`) learns it."""

    #: the categories of Dagster's stale causes (``CODE``, ``DATA``, ``DEPENDENCIES``) that re-run it; None: any
    stale_causes: frozenset[str] | None = None
    #: it runs in the same run as a dependency that runs (the ``will_be_requested`` and eager clauses above):
    #: Dagster's stale status does not propagate down a batch, as a run is planned before it runs
    with_upstream: bool = True
    #: it runs when a batch it reads was materialized (:data:`COLLECTION_ENTRY`'s "a batch updated"): the stale
    #: status of an unpartitioned asset stops tracking its partitioned dependencies past 100 batches
    after_batches: bool = False


#: :data:`CATALOG`, :data:`BATCH_ENTRY`, :func:`batch_step`, :data:`COLLECTION`: missing, stale for any cause,
#: or a dependency runs.
EAGER_RERUN = RerunRule()
#: :data:`COLLECTION_ENTRY`: as eager, and after a batch ran.
COLLECTION_ENTRY_RERUN = RerunRule(after_batches=True)
#: :data:`STUDY`: missing, or stale because of code (its own or upstream: what changes its numbers' meaning);
#: not with its index, nor on every new batch. Its cron is the automation's alone.
STUDY_RERUN = RerunRule(stale_causes=frozenset({"CODE"}), with_upstream=False)


def rerun_rule(condition: AutomationCondition | None) -> RerunRule:
    """The :class:`RerunRule` of an asset whose automation condition is ``condition`` (the asset graph's own)."""
    if condition is STUDY:
        return STUDY_RERUN
    if condition is COLLECTION_ENTRY:
        return COLLECTION_ENTRY_RERUN
    return EAGER_RERUN


def source_observation(cron: str) -> AutomationCondition:
    """Observe ``nga_opendata`` at each ``cron`` tick and on the first evaluation."""
    return (
        AC.cron_tick_passed(cron).since_last_handled() | AC.initial_evaluation() | AC.code_version_changed()
    ).with_label(f"observe at {cron}, when automation starts or when ARTSIM_NGA_SOURCE changes")


#: Seconds between two evaluations of the automation (Dagster's default is 30). A fresh lake or an NGA update
#: waits for up to one interval at each hand-over (source observed → catalog → batches → collection); an
#: evaluation costs about 1 s of CPU on the mirror (3 s at 512 batches, ``artsim bench dagster``).
SENSOR_INTERVAL_S = 15

#: On every run the automation launches (the Runs page filters on it; batch runs also carry Dagster's
#: ``dagster/partition`` tag, e.g. ``dagster/partition=batch-00003``).
AUTOMATION_RUN_TAGS = {"artsim/launched_by": "artsim_automation"}


artsim_automation = AutomationConditionSensorDefinition(
    "artsim_automation",
    target=AssetSelection.all(include_sources=True),  # "*" leaves nga_opendata to a second, default sensor
    run_tags=AUTOMATION_RUN_TAGS,
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    # runs, not a backfill, for a tick that requests several batches: the backfill daemon would launch them only at
    # its next 30 s loop (about 25 s lost at every catalog change); the run queue limits how many run at once
    emit_backfills=False,
    description="Keeps the lake up to date: observes NGA, refreshes the catalog, runs new or changed batches, "
    "then the index and the evaluation (see each asset's automation condition).",
)


@sensor(name="artsim_run_health", minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="Marks failed the STARTED runs whose run worker process is gone (a killed daemon, code server "
        "or run), so the instance's run retries launch them again and the automation is not blocked by them "
        "(artsim_pipeline/run_health.py).")
def artsim_run_health(context):
    from .run_health import fail_dead_run_workers

    failed = fail_dead_run_workers(context.instance)
    if failed:
        context.log.warning(f"marked {len(failed)} run(s) with a dead worker as failed: {', '.join(failed)}")
    return SkipReason(f"{len(failed)} run(s) with a dead worker marked failed" if failed
                      else "every STARTED run has a live worker")
