"""What the asset pages show (issue 33.2), read from the code location's definitions: kinds, a group and a
description on every asset, owners on every materializable one, descriptions that render (no raw ``<...>``,
which the UI's Markdown takes for HTML and drops), and the guarding checks with their blocking flags."""

from __future__ import annotations

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions

BLOCKING = {("filtered_paintings", "no_sudden_shrink"), ("filtered_paintings", "required_columns"),
            ("embeddings_mobilenet_v2", "embeddings_valid"), ("faiss_index", "recall_at_10_vs_exact")}
WARNING_ONLY = {("eval_report", "precision_above_chance"), ("eval_report", "no_quality_drop"),
                ("image_cache", "no_failed_images")}


def test_every_asset_has_kinds_a_group_owners_and_a_description_that_renders():
    graph = build_definitions(Settings(models=("mobilenet_v2",), epochs=2)).resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert len(keys) == 14  # with one model and the learned head
    for key in keys:
        node = graph.get(key)
        name = key.to_user_string()
        assert node.kinds and len(node.kinds) <= 3, name
        assert node.group_name in {"catalog", "images", "embeddings", "index", "evaluation"}, name
        assert node.description and "<" not in node.description and ">" not in node.description, name
        if node.is_materializable:
            assert node.owners == ["team:artsim"], name
    checks = {(ck.asset_key.to_user_string(), ck.name): graph.get_check_spec(ck) for ck in graph.asset_check_keys}
    assert {check for check, spec in checks.items() if spec.blocking} >= BLOCKING
    assert WARNING_ONLY <= set(checks) and not any(checks[check].blocking for check in WARNING_ONLY)
