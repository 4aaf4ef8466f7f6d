"""The deploy profile's Dagster instance on a real PostgreSQL server (127.0.0.1, free port).

``artsim_pipeline/deploy/dagster.yaml`` (PostgreSQL storage from ``ARTSIM_PG_*``, queued run coordinator,
pools) becomes the instance of a full pipeline run over a small NGA snapshot served over HTTP; a second
run with nothing changed materializes nothing. Skips only when PostgreSQL is not installed.
"""

import psycopg2
import pytest
from dagster import DagsterInstance

from artsim_pipeline.config import Settings
from artsim_pipeline.deploy.tags import CATALOG_POOL
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.deploy_services import PostgresServer, deploy_home, postgres_bin
from artsim_pipeline_tests.http_server import IiifImages, LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting
from artsim_pipeline_tests.nga_fixtures import painting_image, publish

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl; Debian: apt-get install postgresql)")
    with PostgresServer(bindir) as server:
        yield server


def test_pipeline_on_the_postgres_instance(tmp_path, postgres, monkeypatch):
    for name, value in postgres.env().items():
        monkeypatch.setenv(name, value)
    home = deploy_home(tmp_path / "dagster_home")
    paintings = [Painting(i, artist=f"Painter {i % 2}", width=128, height=96) for i in range(1, 7)]
    with LocalServer() as server, DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        publish(server, IiifImages(server), paintings, {p.objectid: painting_image(p.objectid) for p in paintings})
        settings = Settings(nga_source=server.url, data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                            image_size=128, models=("efficientnet_lite0",), http_retries=1, pca_dim=4)
        runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)

        first = runner.run()
        assert first.partitions_run("image_cache") == ["batch-00000", "batch-00001"]
        assert first.partitions_run("embeddings_efficientnet_lite0") == ["batch-00000", "batch-00001"]
        assert {"raw_objects", "filtered_paintings", "pca_model", "faiss_index", "eval_report"} <= set(first.assets_run())
        # the catalog steps claimed the `catalog` pool: its limit came from `default_limit: 1`
        assert instance.event_log_storage.get_concurrency_info(CATALOG_POOL).slot_count == 1

        second = runner.run()
        assert second.ran == []

    # the records are in PostgreSQL, not in a SQLite file under DAGSTER_HOME
    assert not list(home.rglob("*.db"))
    with psycopg2.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, password=postgres.password,
                          dbname=postgres.db) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cur.fetchone()[0] >= 6  # observe, catalog, 2 batches, collection; then the second observe
        cur.execute("SELECT count(DISTINCT partition) FROM event_logs WHERE dagster_event_type = "
                    "'ASSET_MATERIALIZATION' AND asset_key = %s", ['["image_cache"]'])
        assert cur.fetchone()[0] == 2
