"""Deployment profiles for running artsim beyond one machine (README "Scaling out").

* ``dagster.yaml``: a Dagster instance on PostgreSQL (run, event-log and schedule storage) with a
  queued run coordinator and concurrency pools; point ``DAGSTER_HOME`` at a folder holding it.
* :mod:`.executors`: the executor chosen by ``ARTSIM_EXECUTOR`` (in_process, multiprocess, celery, k8s).
* :mod:`.tags`: the one table of pools, Celery queues and Kubernetes resources per asset.
* ``celery-worker.yaml``: broker and backend for ``dagster-celery worker start -y``.
* ``Dockerfile``: the code-location image (CPU torch; the offline backbones' weights included).
"""
