"""Issue 32 #3 (fault matrix): a running ``artsim serve`` follows the catalog, not only the index generation.

Real HTTP against uvicorn on 127.0.0.1. The catalog is rewritten the way the catalog step writes it
(``filtered_paintings`` replaced in ``catalog.duckdb``, its Parquet copy exported atomically) while no new
index generation is published: a changed title shows at the next request, a removed painting is gone
from every answer although the index still holds it.
"""

from __future__ import annotations

import duckdb
import requests

from artsim_pipeline.core import catalog as catalog_sql
from artsim_pipeline.web.app import create_app
from artsim_pipeline_tests.web_lake import LiveServer, build_web_lake, engine_factory, painting_rows

RENAMED, REMOVED = 1003, 1005


def rewrite_catalog(lake, overrides=None, removed=()) -> None:
    """The catalog step's writes: the DuckDB table replaced, then its Parquet copy (atomic)."""
    frame = painting_rows(overrides=overrides)
    frame = frame[~frame["objectid"].isin(list(removed))]
    with duckdb.connect(str(lake.catalog_db)) as con:
        con.register("frame", frame)
        con.execute("CREATE OR REPLACE TABLE filtered_paintings AS SELECT * FROM frame")
        con.unregister("frame")
        lake.filtered_paintings_parquet.parent.mkdir(parents=True, exist_ok=True)
        catalog_sql.export_parquet(con, "filtered_paintings", lake.filtered_paintings_parquet)


def get(live, path, **params):
    return requests.get(live.url + path, params=params, timeout=60)


def test_a_running_server_shows_a_changed_title_and_never_a_removed_painting(tmp_path):
    lake, _ = build_web_lake(tmp_path / "lake")
    rewrite_catalog(lake)  # as built by `artsim run` (DuckDB and Parquet)
    generation = lake.index_pointer_path.read_text().strip()
    with LiveServer(create_app(lake, engine_factory(lake))) as live:
        assert get(live, f"/api/paintings/{RENAMED}").json()["title"] == "Painting 3"
        assert get(live, f"/thumbs/{REMOVED}.jpg").status_code == 200
        atlas_before = get(live, "/api/map", wait=30).json()["atlas"]["url"]

        # upstream: one title changed, one painting removed; the index is NOT rebuilt (same generation)
        rewrite_catalog(lake, {RENAMED: {"title": "The Mill at Dusk"}}, removed=[REMOVED])
        painting = get(live, f"/api/paintings/{RENAMED}")
        assert painting.status_code == 200 and painting.json()["title"] == "The Mill at Dusk", painting.text
        found = get(live, "/api/paintings", q="mill at dusk").json()["paintings"]
        assert [p["objectid"] for p in found] == [RENAMED]
        assert get(live, "/api/paintings", q="Painting 3").json()["count"] == 0

        the_map = get(live, "/api/map", wait=30).json()
        titles = dict(zip(the_map["objectid"], the_map["title"]))
        assert titles[RENAMED] == "The Mill at Dusk" and REMOVED not in titles and the_map["count"] == 17
        assert the_map["atlas"]["url"] != atlas_before  # the atlas's cells follow the map's paintings

        # the removed painting: still in the served index, gone from every answer
        health = get(live, "/healthz").json()
        assert health["generation"] == generation and health["indexed"] == 18 and health["paintings"] == 17
        assert get(live, f"/api/paintings/{REMOVED}").status_code == 404
        assert get(live, f"/thumbs/{REMOVED}.jpg").status_code == 404
        assert get(live, "/api/search", objectid=REMOVED).status_code == 404
        results = get(live, "/api/search", objectid=1004, k=50).json()["results"]
        ids = [r["objectid"] for r in results]
        assert REMOVED not in ids and len(ids) == 16  # the 17 in the catalog less the query painting
        titles = {r["objectid"]: r["title"] for r in results}
        assert titles[RENAMED] == "The Mill at Dusk"

        # a rewrite with the same content is not a change (one reload so far, and the engine stays)
        holder = live.server.config.app.state.holder
        served = holder.get()
        rewrite_catalog(lake, {RENAMED: {"title": "The Mill at Dusk"}}, removed=[REMOVED])
        assert get(live, f"/api/paintings/{RENAMED}").json()["title"] == "The Mill at Dusk"
        assert holder.get() is served and holder.catalog.reloads == 1
