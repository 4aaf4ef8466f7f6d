"""Where steps run on a cluster: the one table of concurrency pools, Celery queues and Kubernetes resources.

Asset decorators take their ``pool=`` and ``op_tags=`` from here, so the rules live in one place:

* ``catalog`` (``raw_objects``, ``filtered_paintings``, ``batch_views``): limit 1. DuckDB allows one writer per file and
  only these assets write ``catalog.duckdb``; with the pool at 1 two catalog runs (a manual one and the
  automation's) never open it at once, wherever they run.
* ``downloads`` (``image_cache``): how many batches download at once, cluster-wide. Every download
  goes to the same image host, so the load it sees is this limit × ``ARTSIM_DOWNLOAD_WORKERS``
  connections, at most this limit × ``ARTSIM_REQUESTS_PER_SECOND`` requests per second.
* ``index`` (``pca_model``, ``similarity_head``, ``faiss_index``): limit 1, so one collection step
  stages or publishes the searchable index at a time across machines (the publish lock is a local
  file, which an object-store lake cannot share).
* ``gpu`` (``embeddings_<model>``): embedding steps at once, i.e. the GPUs of the cluster. With
  Celery they go to the ``gpu`` queue (start GPU workers with ``-q gpu``); on Kubernetes their pod
  asks for one ``nvidia.com/gpu``.

Pool limits live in the Dagster instance (``dagster instance concurrency set <pool> <limit>``);
:data:`POOL_LIMITS` are the defaults the README and the tests apply, and the deploy ``dagster.yaml``
gives any pool without a limit of its own a limit of 1 (so ``catalog`` is safe even before it is set).
Without limits (the local SQLite instance) pools change nothing. Plain Python: no Dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CATALOG_POOL = "catalog"
DOWNLOADS_POOL = "downloads"
GPU_POOL = "gpu"
INDEX_POOL = "index"

#: Default slots per pool, cluster-wide (``dagster instance concurrency set <pool> <limit>``).
POOL_LIMITS: dict[str, int] = {CATALOG_POOL: 1, DOWNLOADS_POOL: 4, GPU_POOL: 1, INDEX_POOL: 1}

CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY
CELERY_DEFAULT_QUEUE = "dagster"
GPU_QUEUE = "gpu"
ONE_GPU = {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}


@dataclass(frozen=True)
class Placement:
    """Pool, Celery queue and Kubernetes container resources of one asset's steps."""

    pool: str | None = None
    celery_queue: str | None = None
    k8s_resources: dict = field(default_factory=dict)


#: Per asset (``embeddings`` stands for every ``embeddings_<model>``); assets not listed run anywhere.
PLACEMENTS: dict[str, Placement] = {
    "raw_objects": Placement(pool=CATALOG_POOL),
    "filtered_paintings": Placement(pool=CATALOG_POOL),
    "batch_views": Placement(pool=CATALOG_POOL),
    "image_cache": Placement(pool=DOWNLOADS_POOL),
    "embeddings": Placement(pool=GPU_POOL, celery_queue=GPU_QUEUE, k8s_resources=ONE_GPU),
    "pca_model": Placement(pool=INDEX_POOL),
    "similarity_head": Placement(pool=INDEX_POOL),
    "faiss_index": Placement(pool=INDEX_POOL),
}


def pool(asset_name: str) -> str | None:
    """The concurrency pool of ``asset_name``'s steps (``None``: no pool)."""
    return PLACEMENTS.get(asset_name, Placement()).pool


def op_tags(asset_name: str) -> dict[str, object]:
    """Executor tags of ``asset_name``'s steps: its Celery queue and its pod's resources."""
    placement = PLACEMENTS.get(asset_name, Placement())
    tags: dict[str, object] = {}
    if placement.celery_queue:
        tags[CELERY_QUEUE_TAG] = placement.celery_queue
    if placement.k8s_resources:
        tags[K8S_CONFIG_TAG] = {"container_config": {"resources": placement.k8s_resources}}
    return tags
