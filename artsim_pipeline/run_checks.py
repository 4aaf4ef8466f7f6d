"""The asset checks as ``artsim run`` reads them: which checks a run failed, and which assets' latest
blocking check failed (so that they run again). See :mod:`artsim_pipeline.assets.checks` for the checks; the
metadata key of their one-line hint, :data:`WHAT_TO_DO`, is defined here, where it is read (the asset
modules write it), so that this reader imports no asset module."""

from __future__ import annotations

from dagster import AssetKey, DagsterEventType, DagsterInstance

#: The metadata key of the line saying what to do about a failed check (``artsim run`` prints it).
WHAT_TO_DO = "what_to_do"


class CheckFailed(RuntimeError):
    """A blocking asset check failed: the message names it, its numbers' meaning and what to do (one line)."""


def failed_checks(instance: DagsterInstance, run_id: str) -> tuple[list[str], list[str]]:
    """(failed ERROR checks, failed WARN checks) of run ``run_id``, each as one line naming the check."""
    errors, warnings = [], []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        where = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        partition = getattr(evaluation, "partition", None) or entry.dagster_event.partition
        hint = evaluation.metadata.get(WHAT_TO_DO)
        line = f"check {where}{f' ({partition})' if partition else ''} failed" + (f": {hint.value}" if hint else "")
        (warnings if evaluation.severity.value == "WARN" else errors).append(line)
    return errors, warnings


def blocking_checks_failed(instance: DagsterInstance, graph, keys: list[AssetKey]) -> dict[AssetKey, str]:
    """``{asset: reason}`` for the unpartitioned ``keys`` whose latest blocking check evaluation failed."""
    checks = [ck for key in keys for ck in sorted(graph.get(key).check_keys, key=str) if graph.get_check_spec(ck).blocking]
    if not checks:
        return {}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(checks)
    failed: dict[AssetKey, str] = {}
    for check_key, record in latest.items():
        if record is not None and record.status.value == "FAILED":
            failed.setdefault(check_key.asset_key, f"its check {check_key.name} failed last time")
    return failed
