"""The Dagster instance artsim configures: ``dagster.yaml`` written into a new or empty ``DAGSTER_HOME``.

Without it Dagster prints "No dagster instance configuration file (dagster.yaml) found" on every command
and runs with defaults that do not suit a lake kept up to date by the daemon. What artsim writes (only
when the folder has no ``dagster.yaml``: a user's file is never touched):

* **run monitoring**: a run whose worker died (a killed daemon, its code server or the run process) is
  marked failed after ``start_timeout_seconds`` / by the worker health check, so it no longer blocks the
  automation (``~in_progress``) for ever; a cancel that hangs is finished after ``cancel_timeout_seconds``.
  Runs are not resumed in place (``max_resume_run_attempts: 0``: the default launcher cannot) but retried:
* **run retries**: a run that failed because its worker crashed or was killed is launched again, at most
  :data:`MAX_RUN_RETRIES` times; a run whose asset failed (a bad batch) is not retried by Dagster
  (``retry_on_asset_or_op_failure: false``: the automation's own conditions decide that);
* **the run queue**: at most :data:`MAX_CONCURRENT_RUNS` runs at once (batches run in parallel runs, sharing the
  cores: ``assets.common.share_cores``), started every :data:`DEQUEUE_INTERVAL_S` seconds;
* **retention**: sensor ticks that requested nothing are kept a week, the rest a month;
* **telemetry** off.

Concurrency pools (``catalog``, ``downloads``, ``gpu``, ``index``; :mod:`.deploy.tags`) keep no limit on this
local instance (a slot held by a killed in-process run would stall ``artsim run``); a shared instance sets
them (``deploy/dagster.yaml``). Plain Python: no Dagster import.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MAX_RUN_RETRIES = 2
MAX_CONCURRENT_RUNS = 4
START_TIMEOUT_S = 180
CANCEL_TIMEOUT_S = 180
#: How often the daemon starts queued runs (Dagster's default is 5 s; each start is a new process that takes seconds).
DEQUEUE_INTERVAL_S = 2

INSTANCE_YAML = f"""\
# Written by artsim into a new DAGSTER_HOME (artsim_pipeline/instance.py); edit freely: artsim never
# overwrites this file. README "The Dagster UI" says what each part is for.
telemetry:
  enabled: false

# A run whose worker died (a killed daemon or code server) is marked failed instead of staying STARTED.
run_monitoring:
  enabled: true
  start_timeout_seconds: {START_TIMEOUT_S}
  cancel_timeout_seconds: {CANCEL_TIMEOUT_S}
  max_resume_run_attempts: 0
  poll_interval_seconds: 30

# ... and launched again (the daemon), at most {MAX_RUN_RETRIES} times; a failed asset is not retried here.
run_retries:
  enabled: true
  max_retries: {MAX_RUN_RETRIES}
  retry_on_asset_or_op_failure: false

# Runs of the UI, sensors and backfills wait in a queue; the daemon starts {MAX_CONCURRENT_RUNS} at once.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
    dequeue_interval_seconds: {DEQUEUE_INTERVAL_S}

retention:
  schedule:
    purge_after_days: 30
  sensor:
    purge_after_days:
      skipped: 7
      failure: 30
      success: 30
"""


def ensure_instance_config(home: Path | str) -> bool:
    """Write :data:`INSTANCE_YAML` as ``<home>/dagster.yaml`` unless one exists; True when written.

    Written atomically (a temporary file renamed with ``os.link``, which fails rather than replace a
    file another process wrote meanwhile)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if target.exists():
        return False
    fd, tmp = tempfile.mkstemp(prefix=".dagster.yaml.", dir=home)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(INSTANCE_YAML)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)
