"""The asset checks that guard what is published, as Dagster check specs and results with their numbers.

Every check here is evaluated *inside* its asset's step (``check_specs`` on the asset), because what it
guards must be decided before the asset replaces what search serves: ``filtered_paintings`` keeps its
previous table when the shrink check fails, ``faiss_index`` publishes no generation when its recall check
fails. A failed **blocking** check fails the step, so nothing downstream runs in that run, and the
automation conditions wait on :meth:`AutomationCondition.all_deps_blocking_checks_passed` (see
:mod:`artsim_pipeline.automation`); ``artsim run`` reads the same results and names a failed one
(:mod:`artsim_pipeline.runner`). Each result carries ``what_to_do``: the one line the CLI prints.
"""

from __future__ import annotations

import math

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from ..run_checks import WHAT_TO_DO  # the key artsim run reads the hint under (defined with its reader)

# check names (asset -> check)
REQUIRED_COLUMNS = "required_columns"
NO_SUDDEN_SHRINK = "no_sudden_shrink"
EMBEDDINGS_VALID = "embeddings_valid"
FAILURE_SHARE = "failure_share_within_limit"
RECALL_AT_10 = "recall_at_10_vs_exact"
ABOVE_CHANCE = "precision_above_chance"
NO_QUALITY_DROP = "no_quality_drop"

#: Columns of ``filtered_paintings`` that the batches, search and the evaluation read.
CATALOG_REQUIRED_COLUMNS = ("objectid", "uuid", "title", "artist", "artist_key", "iiifurl", "width", "height",
                            "image_modified", "style", "medium", "beginyear", "endyear", "displaydate")


def spec(name: str, asset: str, description: str, blocking: bool = True, partitions_def=None) -> AssetCheckSpec:
    return AssetCheckSpec(name, asset=asset, description=description, blocking=blocking,
                          partitions_def=partitions_def)


def result(name: str, passed: bool, metadata: dict, what_to_do: str = "", warn: bool = False) -> AssetCheckResult:
    """A check result with its numbers; ``what_to_do`` (when it failed) is the CLI's hint."""
    meta = dict(metadata)
    if not passed and what_to_do:
        meta[WHAT_TO_DO] = MetadataValue.text(what_to_do)
    return AssetCheckResult(check_name=name, passed=bool(passed), metadata=meta,
                            severity=AssetCheckSeverity.WARN if warn else AssetCheckSeverity.ERROR)


def required_columns_result(columns: list[str]) -> AssetCheckResult:
    """``filtered_paintings`` has every column that later steps read."""
    missing = [c for c in CATALOG_REQUIRED_COLUMNS if c not in set(columns)]
    return result(REQUIRED_COLUMNS, not missing, {
        "required": MetadataValue.int(len(CATALOG_REQUIRED_COLUMNS)),
        "present": MetadataValue.int(len(CATALOG_REQUIRED_COLUMNS) - len(missing)),
        "missing": MetadataValue.text(", ".join(missing) or "none"),
    }, what_to_do=f"NGA's CSVs lack what filtered_paintings needs ({', '.join(missing)}); check the source")


def shrink_result(previous: int | None, offered: int, max_shrink: float, refused: bool) -> AssetCheckResult:
    """The painting count against the last materialization: fails when the refresh was refused."""
    dropped = 0.0 if not previous else max(0.0, (previous - offered) / previous)
    return result(NO_SUDDEN_SHRINK, not refused, {
        "previous_paintings": MetadataValue.int(int(previous or 0)),
        "offered_paintings": MetadataValue.int(int(offered)),
        "dropped_share": MetadataValue.float(round(dropped, 4)),
        "max_shrink": MetadataValue.float(float(max_shrink)),
        "kept_previous_table": MetadataValue.bool(bool(refused)),
    }, what_to_do=f"the refresh would drop {dropped:.0%} of the paintings ({previous} to {offered}; more than "
       f"ARTSIM_MAX_SHRINK={max_shrink:g}) and was refused, the previous catalog and index stay served; if the drop "
       f"is expected, run again with ARTSIM_MAX_SHRINK=1 (or max_shrink: 1.0 in the launchpad's artsim resource)")


def failure_share_result(failed: int, total: int, max_share: float, problem: str | None) -> AssetCheckResult:
    """``image_cache``: at most ``max_share`` of the batch's images failed (``problem``: why not, or None)."""
    return result(FAILURE_SHARE, problem is None, {
        "failed": MetadataValue.int(int(failed)),
        "images": MetadataValue.int(int(total)),
        "failure_share": MetadataValue.float(round(failed / total, 4) if total else 0.0),
        "max_failure_share": MetadataValue.float(float(max_share)),
    }, what_to_do=f"{problem}; its faces and embeddings keep their last good files, the next run retries the failed "
       "images (raise ARTSIM_MAX_FAILURE_SHARE to accept them)")


def embeddings_result(expected_rows: int, rows: int, finite_rows: int, width: int, expected_width: int,
                      model: str) -> AssetCheckResult:
    """One ``full`` vector per usable image, every value finite, the model's width."""
    passed = rows == expected_rows and finite_rows == rows and (rows == 0 or width == expected_width)
    return result(EMBEDDINGS_VALID, passed, {
        "usable_images": MetadataValue.int(int(expected_rows)),
        "full_vectors": MetadataValue.int(int(rows)),
        "non_finite_vectors": MetadataValue.int(int(rows - finite_rows)),
        "width": MetadataValue.int(int(width)),
        "expected_width": MetadataValue.int(int(expected_width)),
    }, what_to_do=f"the {model} embeddings of this batch are not one finite {expected_width}-wide vector per usable "
       "image; materialize the batch again (its image_cache, face_crops and embeddings)")


def recall_result(recall: float | None, minimum: float, published: bool) -> AssetCheckResult:
    """``faiss_index``: recall@10 against exact search at least ``minimum``; otherwise nothing was published.
    ``recall`` None: no index was built (fewer than 2 paintings), nothing to measure and nothing published."""
    value = float(recall) if recall is not None and math.isfinite(float(recall)) else 0.0
    return result(RECALL_AT_10, recall is None or value >= minimum, {
        "recall_at_10": MetadataValue.float(round(value, 4)) if recall is not None
        else MetadataValue.text("no index built"),
        "min_recall": MetadataValue.float(float(minimum)),
        "published": MetadataValue.bool(bool(published)),
    }, what_to_do=f"the new index finds {value:.3f} of the exact top 10 (below ARTSIM_MIN_RECALL={minimum:g}); it was "
       "not published and search keeps the last good generation; lower ARTSIM_MIN_RECALL only if that is acceptable")


def above_chance_result(precision: float, chance: float, k: int) -> AssetCheckResult:
    """``eval_report``: P@K of the served search above the random baseline."""
    return result(ABOVE_CHANCE, precision > chance, {
        f"precision_at_{k}": MetadataValue.float(round(float(precision), 4)),
        f"random_precision_at_{k}": MetadataValue.float(round(float(chance), 4)),
        "lift": MetadataValue.float(round(float(precision) / chance, 3) if chance > 0 else 0.0),
    }, what_to_do=f"P@{k} {precision:.3f} is not above chance ({chance:.3f}): the served index does not find "
       "similar paintings; check the models' weights (ARTSIM_WEIGHTS) and the last embeddings")


def quality_drop_result(precision: float, previous: float | None, max_drop: float, k: int) -> AssetCheckResult:
    """``eval_report``: a warning when P@K fell more than ``max_drop`` (absolute) below the previous report."""
    drop = 0.0 if previous is None else float(previous) - float(precision)
    return result(NO_QUALITY_DROP, drop <= max_drop, {
        f"precision_at_{k}": MetadataValue.float(round(float(precision), 4)),
        f"previous_precision_at_{k}": MetadataValue.float(round(float(previous), 4)) if previous is not None
        else MetadataValue.text("none (first report)"),
        "drop": MetadataValue.float(round(drop, 4)),
        "max_drop": MetadataValue.float(float(max_drop)),
    }, warn=True, what_to_do=f"P@{k} fell by {drop:.3f} since the previous report (more than "
       f"ARTSIM_MAX_QUALITY_DROP={max_drop:g}); compare reports/eval_report.md with the previous run's")
