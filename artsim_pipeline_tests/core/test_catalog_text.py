"""Catalog text lookups, facets and the filters' removal report, on a small catalog in pandas and DuckDB
(no lake, no model)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from artsim_pipeline.core.catalog_text import CatalogText, facets
from artsim_pipeline.core.scoring import normalize_artist
from artsim_pipeline.core.search_filters import SearchFilters, allowed_ids, removal_report
from artsim_pipeline.core.search_loaders import CATALOG_COLUMNS


def catalog(dated: bool = True) -> pd.DataFrame:
    rows = []
    for i in range(12):
        artist = ["Claude Monet", "Attributed to Claude Monet", "Diego Velázquez", "Édouard Manet"][i % 4]
        rows.append({"objectid": 500 + i, "uuid": f"u{i}", "title": "Untitled" if i % 2 else f"Water Lilies {i}",
                     "artist": artist, "artist_key": normalize_artist(artist),
                     "style": ("Impressionism; Plein air" if i % 4 != 2 else "Baroque") if dated else None,
                     "beginyear": 1870 + i if dated else None, "endyear": 1871 + i if dated else None,
                     "displaydate": None, "medium": "oil on canvas" if dated else None})
    rows[5]["title"] = "Portrait of Diego Velazquez"
    return pd.DataFrame(rows, columns=list(CATALOG_COLUMNS)).set_index("objectid", drop=False)


def test_find_an_artist_counts_all_their_paintings_and_names_them():
    text = CatalogText(catalog())
    monet = text.find("MONET")  # "Claude Monet" and "Attributed to Claude Monet": one person
    assert monet.total == 6 and monet.artist == "Claude Monet" and monet.by_artist == 6
    # a title that names the artist: found too, and counted apart from the artist's own
    velazquez = text.find("velazquez")
    assert velazquez.total == 4 and velazquez.artist == "Diego Velázquez" and velazquez.by_artist == 3
    assert text.find("manet").artist == "Édouard Manet"
    both = text.find("anet")  # part of a name: "Édouard Manet" only
    assert both.artist == "Édouard Manet"
    assert text.find("water").artist is None and text.find("water").total == 6  # titles only


def test_nothing_found_offers_close_names_or_none():
    text = CatalogText(catalog())
    missing = text.find("Kazimir Malevich")
    assert missing.total == 0 and missing.suggestions == []
    assert text.find("monnet").suggestions[0] == "Claude Monet"
    assert "Diego Velázquez" in text.find("velasques").suggestions
    assert text.find("").total == 0


def test_facets_offer_only_what_the_catalog_has():
    full = facets(catalog())
    assert full["style"]["available"] and full["medium"]["available"] and full["years"]["available"]
    assert full["style"]["values"][0] == {"value": "Impressionism", "count": 9}  # "; "-lists split
    assert {"value": "Baroque", "count": 3} in full["style"]["values"]
    assert full["years"]["min"] == 1870 and full["years"]["max"] == 1882
    assert full["artist"]["values"][0]["count"] == 3 and full["total"] == 12
    bare = facets(catalog(dated=False))
    assert not bare["style"]["available"] and not bare["medium"]["available"] and not bare["years"]["available"]
    assert bare["years"]["min"] is None and bare["artist"]["available"]


@pytest.mark.parametrize("dated", [True, False])
def test_removal_report_says_what_each_filter_removed(dated):
    db = duckdb.connect()
    frame = catalog(dated).reset_index(drop=True)
    db.register("frame", frame)
    db.execute("CREATE TABLE filtered_paintings AS SELECT * FROM frame")
    filters = SearchFilters.create(artist="monet", years="1600-1700")
    assert allowed_ids(db, filters).size == 0
    report = removal_report(db, filters)
    assert report[0] == "artist 'monet' removed 6 of 12 paintings"
    if dated:
        assert report[1] == "years 1600\u20131700 removed 12 of 12 paintings"
    else:
        assert report[1] == "years 1600\u20131700 removed 12 of 12 paintings (no painting has a date)"
    together = removal_report(db, SearchFilters.create(artist="velazquez", style="impressionism"))
    if dated:
        assert together[-1] == "each filter alone leaves some paintings; together they leave none"
    else:
        assert together[1] == "style 'impressionism' removed 12 of 12 paintings (no painting has a style)"
    assert removal_report(db, SearchFilters()) == []
