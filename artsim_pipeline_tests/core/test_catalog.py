import duckdb
import pandas as pd
import pytest

from artsim_pipeline.core import batches, catalog
from artsim_pipeline.core.nga_source import NgaSource
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.lake_reads import catalog_paintings
from artsim_pipeline.core.storage import read_parquet
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror


def load(tmp_path, paintings, min_side=300, limit=0):
    mirror = write_mirror(tmp_path / "mirror", paintings, with_images=False)
    lake = DataLake(tmp_path / "lake")
    snapshot = NgaSource(str(mirror)).fetch(lake)
    con = duckdb.connect(str(lake.catalog_db))
    counts = catalog.load_raw_tables(con, snapshot)
    catalog.build_filtered_paintings(con, min_side, limit)
    return con, counts


def rows(con):
    return con.execute("SELECT * FROM filtered_paintings ORDER BY objectid").fetch_df().set_index("objectid")


def test_filter_keeps_only_open_primary_paintings_with_big_enough_images(tmp_path):
    paintings = [
        Painting(1, width=1500, height=1200),
        Painting(2, classification="Print"),
        Painting(3, openaccess="0"),
        Painting(4, viewtype="alternate"),
        Painting(5, width=299),
        Painting(6, height=250),
        Painting(7, attribution=""),
        Painting(8, iiif=False),
        Painting(9, classification="painting"),
    ]
    con, counts = load(tmp_path, paintings)
    assert counts["objects"] == 9
    table = rows(con)
    assert list(table.index) == [1, 9]
    assert bool(table.loc[1, "has_high_res"]) and not bool(table.loc[9, "has_high_res"])


def test_artist_comes_from_constituents_else_attribution_and_style_from_terms(tmp_path):
    paintings = [
        Painting(1, attribution="Attributed to Someone", artist="Jan van Eyck", styles=["Baroque", "Dutch"]),
        Painting(2, attribution="Édouard Manet", title="Portrait of a Lady"),
    ]
    table = rows(load(tmp_path, paintings)[0])
    assert table.loc[1, "artist"] == "Jan van Eyck" and table.loc[1, "style"] == "Baroque; Dutch"
    assert table.loc[2, "artist"] == "Édouard Manet" and table.loc[2, "artist_key"] == "edouard manet"
    assert bool(table.loc[2, "is_portrait"]) and not bool(table.loc[1, "is_portrait"])
    assert table.loc[1, "beginyear"] == 1650 and table.loc[1, "medium"] == "oil on canvas"


def test_limit_is_deterministic_and_prefers_high_resolution(tmp_path):
    paintings = [Painting(i, width=1500 if i in (7, 3) else 500) for i in range(1, 10)]
    table = rows(load(tmp_path, paintings, limit=4)[0])
    assert list(table.index) == [1, 2, 3, 7]


def test_missing_required_column_is_a_clear_error(tmp_path):
    mirror = write_mirror(tmp_path / "mirror", [Painting(1)], with_images=False)
    objects = mirror / "data" / "objects.csv"
    objects.write_text(objects.read_text().replace("classification", "kind", 1))
    lake = DataLake(tmp_path / "lake")
    con = duckdb.connect()
    with pytest.raises(catalog.CatalogError, match=r"objects\.csv .*classification"):
        catalog.load_raw_tables(con, NgaSource(str(mirror)).fetch(lake))


def published_batches(con, lake: DataLake) -> tuple[dict[str, list[int]], dict[str, str]]:
    """What the ``filtered_paintings`` step publishes, read back as the batch steps read it: each painting's
    batch attached, the table written to ``tables/filtered_paintings.parquet``, the members of each batch
    (``lake_reads.catalog_paintings``) and each batch's version (``batches.fingerprints_of`` of the file)."""
    batches.attach_batch_keys(con)
    catalog.export_parquet(con, "filtered_paintings", lake.filtered_paintings_parquet)
    keys = catalog_paintings(lake, ["batch_key"])["batch_key"].unique()
    members = {key: catalog_paintings(lake, ["batch_key"], batch=key)["objectid"].astype(int).tolist() for key in keys}
    versions = batches.fingerprints_of(
        read_parquet(lake.filtered_paintings_parquet, columns=[*batches.FINGERPRINT_COLUMNS, "batch_key"]))
    return members, versions


def test_batches_are_assigned_once_and_new_paintings_get_new_batches(tmp_path):
    con, _ = load(tmp_path, [Painting(i) for i in range(1, 8)])
    lake = DataLake(tmp_path / "lake")
    assert batches.assign_batches(con, 3) == ["batch-00000", "batch-00001", "batch-00002"]
    members, before = published_batches(con, lake)
    assert batches.assign_batches(con, 3) == []
    assert members == {"batch-00000": [1, 2, 3], "batch-00001": [4, 5, 6], "batch-00002": [7]}
    # NGA adds 3 paintings, removes painting 5 and changes painting 2's image
    con.execute("INSERT INTO raw_objects SELECT * REPLACE (CAST(CAST(objectid AS INT) + 100 AS VARCHAR) AS objectid) FROM raw_objects WHERE objectid IN ('1','2','3')")
    con.execute("INSERT INTO raw_published_images SELECT * REPLACE (CAST(CAST(depictstmsobjectid AS INT) + 100 AS VARCHAR) AS depictstmsobjectid, uuid || 'x' AS uuid) FROM raw_published_images WHERE depictstmsobjectid IN ('1','2','3')")
    con.execute("DELETE FROM raw_objects WHERE objectid = '5'")
    con.execute("UPDATE raw_published_images SET modified = '2025-06-01' WHERE depictstmsobjectid = '2'")
    catalog.build_filtered_paintings(con, 300, 0)
    assert batches.assign_batches(con, 3) == ["batch-00003"]
    members, after = published_batches(con, lake)
    assert members["batch-00003"] == [101, 102, 103] and members["batch-00001"] == [4, 6]
    changed = {key for key in after if before.get(key) != after[key]}
    assert changed == {"batch-00000", "batch-00001", "batch-00003"}
    assert after["batch-00002"] == before["batch-00002"]


def test_optional_columns_may_be_absent(tmp_path):
    mirror = write_mirror(tmp_path / "mirror", [Painting(1, artist="A"), Painting(2, openaccess="0")], with_images=False)
    images = mirror / "data" / "published_images.csv"
    frame = pd.read_csv(images).drop(columns=["sequence", "openaccess", "modified"])
    frame.to_csv(images, index=False)
    constituents = mirror / "data" / "constituents.csv"
    pd.read_csv(constituents).drop(columns=["preferreddisplayname"]).to_csv(constituents, index=False)
    lake = DataLake(tmp_path / "lake")
    con = duckdb.connect()
    catalog.load_raw_tables(con, NgaSource(str(mirror)).fetch(lake))
    assert catalog.build_filtered_paintings(con, 300, 0) == 2  # without openaccess every image counts as open


# -- fault probe regressions --------------------------------------------------------------------------

def test_negative_objectid_is_rejected_and_counted_not_indexed(tmp_path):
    con, _ = load(tmp_path, [Painting(1), Painting(-7), Painting(3)])
    assert list(rows(con).index) == [1, 3]
    assert catalog.rejected_summary(con) == {
        "rejected": 1, "rejected_negative_objectid": 1, "rejected_duplicate_objectid": 0, "rejected_invalid_objectid": 0,
    }
    assert con.execute("SELECT objectid, reason FROM filtered_paintings_rejected").fetchall() == [(-7, "negative_objectid")]
    assert batches.assign_batches(con, 10) == ["batch-00000"]
    assert [r[0] for r in con.execute("SELECT objectid FROM batch_manifest ORDER BY 1").fetchall()] == [1, 3]


def _duplicate_object_rows(mirror, objectid: int, titles: list[str], uuids: list[str]) -> None:
    objects = mirror / "data" / "objects.csv"
    frame = pd.read_csv(objects, dtype=str, keep_default_na=False)
    row = frame[frame["objectid"] == str(objectid)].iloc[0]
    extra = [row.copy() for _ in titles]
    for copy, title, uuid in zip(extra, titles, uuids):
        copy["title"], copy["uuid"] = title, uuid
    frame = frame[frame["objectid"] != str(objectid)]
    pd.concat([frame, pd.DataFrame(extra)], ignore_index=True).to_csv(objects, index=False)


@pytest.mark.parametrize("order", [["b-uuid", "a-uuid", "c-uuid"], ["c-uuid", "a-uuid", "b-uuid"]])
def test_duplicate_objectid_rows_are_deduplicated_deterministically(tmp_path, order):
    mirror = write_mirror(tmp_path / "mirror", [Painting(1), Painting(2), Painting(3)], with_images=False)
    titles = {"a-uuid": "Kept", "b-uuid": "Dropped B", "c-uuid": "Dropped C"}
    _duplicate_object_rows(mirror, 2, [titles[u] for u in order], order)
    lake = DataLake(tmp_path / "lake")
    snapshot = NgaSource(str(mirror)).fetch(lake)
    con = duckdb.connect(str(lake.catalog_db))  # a fresh lake: the manifest's primary key sees every row
    catalog.load_raw_tables(con, snapshot)
    assert catalog.build_filtered_paintings(con, 300, 0) == 3
    table = rows(con)
    assert list(table.index) == [1, 2, 3] and table.loc[2, "title"] == "Kept"  # lowest object uuid wins
    assert catalog.rejected_summary(con)["rejected_duplicate_objectid"] == 2
    assert batches.assign_batches(con, 2) == ["batch-00000", "batch-00001"]
    assert con.execute("SELECT count(*), count(DISTINCT objectid) FROM batch_manifest").fetchall() == [(3, 3)]


def test_duplicate_objectid_rows_without_object_uuid_column(tmp_path):
    mirror = write_mirror(tmp_path / "mirror", [Painting(1), Painting(2)], with_images=False)
    _duplicate_object_rows(mirror, 1, ["Zeta", "Alpha"], ["x", "y"])
    objects = mirror / "data" / "objects.csv"
    pd.read_csv(objects, dtype=str, keep_default_na=False).drop(columns=["uuid"]).to_csv(objects, index=False)
    lake = DataLake(tmp_path / "lake")
    con = duckdb.connect()
    catalog.load_raw_tables(con, NgaSource(str(mirror)).fetch(lake))
    assert catalog.build_filtered_paintings(con, 300, 0) == 2
    assert rows(con).loc[1, "title"] == "Alpha"
    assert catalog.rejected_summary(con)["rejected"] == 1


def test_check_shrink_refuses_a_suspicious_drop_naming_the_setting():
    catalog.check_shrink(None, 0, 0.5)  # fresh lake
    catalog.check_shrink(30, 15, 0.5)  # exactly half: allowed
    catalog.check_shrink(30, 40, 0.5)  # growth
    catalog.check_shrink(30, 0, 1.0)  # 1.0 disables the check
    catalog.check_shrink(1000, 10, 0.5, limit=10)  # ARTSIM_LIMIT lowered to 10: no shrink
    with pytest.raises(catalog.ShrinkError, match=r"30 to 14 .*ARTSIM_MAX_SHRINK=0.5"):
        catalog.check_shrink(30, 14, 0.5)
    with pytest.raises(catalog.ShrinkError, match="ARTSIM_MAX_SHRINK"):
        catalog.check_shrink(30, 20, 0.2)


def test_shrinking_refresh_is_refused_and_keeps_the_previous_table(tmp_path):
    con, _ = load(tmp_path, [Painting(i) for i in range(1, 31)])
    assert catalog.build_filtered_paintings(con, 300, 0, max_shrink=0.5) == 30
    before = rows(con)
    con.execute("DELETE FROM raw_objects WHERE TRY_CAST(objectid AS INT) > 14")  # a CSV cut after row 14
    with pytest.raises(catalog.ShrinkError, match="ARTSIM_MAX_SHRINK"):
        catalog.build_filtered_paintings(con, 300, 0, max_shrink=0.5)
    pd.testing.assert_frame_equal(rows(con), before)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables & {"filtered_paintings_new", "painting_candidates"} == set()
    assert catalog.build_filtered_paintings(con, 300, 0, max_shrink=1.0) == 14  # confirmed


def test_lake_path_with_a_single_quote_or_glob_characters_reaches_sql_safely(tmp_path):
    root = tmp_path / "it's a [lake]; DROP TABLE x; --'"
    con, _ = load(root, [Painting(1), Painting(2)])
    lake = DataLake(root / "lake")
    catalog.export_parquet(con, "filtered_paintings", lake.filtered_paintings_parquet)
    assert pd.read_parquet(lake.filtered_paintings_parquet)["objectid"].tolist() == [1, 2]
    lake.faces_dir.mkdir(parents=True)
    pd.DataFrame({"objectid": [1], "face_count": [2]}).to_parquet(lake.faces_dir / "batch-00000.parquet")
    assert catalog.register_parquet_view(con, "face_crops", lake.faces_dir)
    assert con.execute("SELECT objectid, face_count FROM face_crops").fetchall() == [(1, 2)]
    assert catalog.sql_path(root) == "'" + str(root).replace("'", "''") + "'"


def test_limit_at_the_int64_maximum_builds(tmp_path):
    """ARTSIM_LIMIT is validated up to 2**63 - 1 (config); that largest value must reach DuckDB fine."""
    from artsim_pipeline.config import Settings

    limit = Settings(limit=2**63 - 1).limit
    con, _ = load(tmp_path, [Painting(1), Painting(2)], limit=limit)
    assert list(rows(con).index) == [1, 2]


def test_a_new_catalog_database_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """DuckDB writes a new file's header after creating it: a kill in between must not leave a torn file."""
    path = tmp_path / "lake" / "catalog.duckdb"
    real_connect = duckdb.connect

    def killed_while_creating(database, *args, **kwargs):
        with open(database, "ab") as handle:  # what DuckDB has done when the kill comes: the file, no header
            handle.write(b"\0" * 16)
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog.duckdb, "connect", killed_while_creating)
    with pytest.raises(KeyboardInterrupt):
        catalog.create_catalog_db(path)
    assert list(path.parent.iterdir()) == [], "neither a torn catalog nor its temp file is left"

    monkeypatch.setattr(catalog.duckdb, "connect", real_connect)
    assert catalog.create_catalog_db(path) is True
    assert sorted(p.name for p in path.parent.iterdir()) == ["catalog.duckdb"]
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("CREATE TEMP TABLE probe AS SELECT 1 AS x")
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    assert catalog.create_catalog_db(path) is False, "an existing catalog is left as it is"
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT answer FROM kept").fetchall() == [(42,)]
