"""What re-runs an asset has one home: the automation conditions, each with the :class:`RerunRule` that says what
it asks beyond "missing or stale"; ``artsim run`` reads the rule of each asset's own condition (no list of its own).

Checked on the real code location (which assets get which rule, and why) and on the runner's plan, with a resolver
that answers as Dagster's would (so each rule's effect shows without materializing anything).
"""

from types import SimpleNamespace

import pytest
from dagster import AssetKey, DagsterInstance

from artsim_pipeline.automation import (
    COLLECTION_ENTRY,
    COLLECTION_ENTRY_RERUN,
    EAGER_RERUN,
    REFRESH_TAG,
    STUDY,
    STUDY_RERUN,
    rerun_rule,
)
from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner


@pytest.fixture(scope="module")
def runner():
    settings = Settings(nga_source="mirror", models=("efficientnet_lite0",))
    with DagsterInstance.ephemeral() as instance:
        yield PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)


def test_each_asset_gets_the_rule_of_its_own_condition(runner):
    names = {key.to_user_string(): rule for key, rule in runner.rules.items()}
    assert names["eval_study"] is STUDY_RERUN and names["pca_model"] is COLLECTION_ENTRY_RERUN
    assert names["image_cache"] is EAGER_RERUN and names["faiss_index"] is EAGER_RERUN
    assert rerun_rule(STUDY) is STUDY_RERUN and rerun_rule(COLLECTION_ENTRY) is COLLECTION_ENTRY_RERUN
    assert rerun_rule(None) is EAGER_RERUN


def test_the_rules_fall_where_their_reasons_are(runner):
    """``after_batches`` exists because the collection's stale status loses track of many batches: it is the
    rule of exactly the collection assets that read a batch; the study (tagged so on its page) alone runs
    neither with its index nor for a data change."""
    reads_a_batch = {key for key in runner.collection_keys
                     if set(runner.graph.get(key).parent_keys) & set(runner.batch_keys)}
    assert {key for key, rule in runner.rules.items() if rule.after_batches} == reads_a_batch
    study = {key for key in runner.rules if runner.graph.get(key).tags.get(REFRESH_TAG) == "study"}
    assert {key for key, rule in runner.rules.items() if rule.stale_causes is not None} == study
    assert {key for key, rule in runner.rules.items() if not rule.with_upstream} == study


class _Resolver:
    """Answers as Dagster's stale resolver: ``status`` per asset name (FRESH otherwise), each stale one with
    root causes of ``categories``."""

    def __init__(self, status: dict[str, str], categories: dict[str, str]):
        self.status, self.categories = status, categories

    def get_status(self, key, partition=None):
        return SimpleNamespace(value=self.status.get(key.to_user_string(), "FRESH"))

    def get_stale_root_causes(self, key, partition=None):
        category = self.categories.get(key.to_user_string(), "DATA")
        return [SimpleNamespace(category=SimpleNamespace(value=category), reason=f"{category.lower()} cause")]


def _plan(runner, status, categories=None, also=None):
    chosen = runner._stale(runner.collection_keys, resolver=_Resolver(status, categories or {}), also=also)
    return {key.to_user_string(): reason for key, reason in chosen}


def test_the_runner_plans_as_the_rules_say(runner):
    # a stale index: what follows it runs with it, the study does not (its numbers wait for new code or its cron)
    plan = _plan(runner, {"faiss_index": "STALE", "eval_study": "STALE"})
    assert plan["faiss_index"] == "data cause" and plan["eval_report"] == "upstream runs"
    assert "eval_study" not in plan
    # a code change re-runs the study; missing does too; artsim's own reason still counts for it
    assert _plan(runner, {"eval_study": "STALE"}, {"eval_study": "CODE"}) == {"eval_study": "code changed"}
    assert _plan(runner, {"eval_study": "MISSING"}) == {"eval_study": "missing"}
    assert _plan(runner, {}, also={AssetKey("eval_study"): "damaged: x"}) == {"eval_study": "damaged: x"}
    assert _plan(runner, {}) == {}
