"""Fault matrix (issue 19): bad catalog input is quarantined or named in one line, never a DuckDB dump."""

import duckdb
import pytest

from artsim_pipeline.core import catalog
from artsim_pipeline.core.nga_source import NgaSource
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror


def _snapshot(tmp_path, paintings, edit=None):
    mirror = write_mirror(tmp_path / "mirror", paintings, with_images=False)
    if edit is not None:
        edit(mirror / "data" / "objects.csv")
    lake = DataLake(tmp_path / "lake")
    return NgaSource(str(mirror)).fetch(lake), duckdb.connect(str(lake.catalog_db))


def _latin1_title(objectid: int):
    def edit(path):
        lines = path.read_bytes().split(b"\n")
        at = next(i for i, ln in enumerate(lines) if ln.startswith(f"{objectid},".encode()))
        first = lines[at].split(b",")
        first[1] = b"Caf\xe9"  # the title, latin-1 encoded
        lines[at] = b",".join(first)
        path.write_bytes(b"\n".join(lines))
    return edit


def test_latin1_row_is_quarantined_with_file_line_and_reason(tmp_path):
    snapshot, con = _snapshot(tmp_path, [Painting(1), Painting(2), Painting(3)], edit=_latin1_title(2))
    counts = catalog.load_raw_tables(con, snapshot)  # raised DuckDB's 25-line "Invalid unicode" dump before
    assert counts[catalog.REJECTED_ROWS_KEY] == 1
    [(file, line, reason)] = con.execute(f"SELECT * FROM {catalog.RAW_REJECTS}").fetchall()
    assert file == "objects.csv" and line >= 2 and "ENCODING" in reason.upper()
    catalog.build_filtered_paintings(con, 300, 0)
    assert [r[0] for r in con.execute("SELECT objectid FROM filtered_paintings ORDER BY 1").fetchall()] == [1, 3]


def test_clean_files_have_no_rejects(tmp_path):
    snapshot, con = _snapshot(tmp_path, [Painting(1)])
    assert catalog.load_raw_tables(con, snapshot)[catalog.REJECTED_ROWS_KEY] == 0


def test_oversized_field_is_a_one_line_error_naming_the_file(tmp_path):
    def edit(path):
        with path.open("a") as fh:
            fh.write('99,"' + "x" * 10_100_000 + '",,,,,,,\n')

    snapshot, con = _snapshot(tmp_path, [Painting(1)], edit=edit)
    with pytest.raises(catalog.CatalogError, match=r"objects\.csv") as err:
        catalog.load_raw_tables(con, snapshot)
    assert "\n" not in str(err.value) and "max_line_size" not in str(err.value)


@pytest.mark.parametrize("bad", ["abc", "99999999999999999999"])
def test_objectid_that_is_not_an_int64_is_counted_as_rejected(tmp_path, bad):
    def edit(path):
        text = path.read_text()
        path.write_text(text.replace("\n2,", f"\n{bad},", 1))

    snapshot, con = _snapshot(tmp_path, [Painting(1), Painting(2)], edit=edit)
    catalog.load_raw_tables(con, snapshot)
    catalog.build_filtered_paintings(con, 300, 0)
    assert catalog.rejected_summary(con)["rejected_invalid_objectid"] == 1
    assert con.execute("SELECT reason FROM filtered_paintings_rejected").fetchall() == [("invalid_objectid",)]


@pytest.mark.parametrize("min_side, stage", [(99_999_999, "0 with both sides >= ARTSIM_MIN_SIDE=99999999")])
def test_filter_keeping_nothing_says_which_stage_emptied_it(tmp_path, min_side, stage):
    snapshot, con = _snapshot(tmp_path, [Painting(1), Painting(2)])
    catalog.load_raw_tables(con, snapshot)
    with pytest.raises(catalog.CatalogError, match="kept 0 paintings") as err:
        catalog.build_filtered_paintings(con, min_side, 0)
    assert "2 with an attribution" in str(err.value) and stage in str(err.value)


def test_header_only_csvs_say_no_rows_were_read(tmp_path):
    def edit(path):
        path.write_text(path.read_text().splitlines()[0] + "\n")

    snapshot, con = _snapshot(tmp_path, [Painting(1)], edit=edit)
    catalog.load_raw_tables(con, snapshot)
    with pytest.raises(catalog.CatalogError, match="kept 0 paintings: 0 object rows read"):
        catalog.build_filtered_paintings(con, 300, 0)
