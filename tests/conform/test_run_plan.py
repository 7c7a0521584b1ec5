"""Which part of the dbt graph a delta run builds (``ndc.conform.run_plan.delta_nodes``), from the manifest."""

from __future__ import annotations

import json

from ndc.conform import dbt
from ndc.conform.run_plan import RunPlan, delta_nodes


def _names(nodes: list[str], kind: str) -> set[str]:
    return {n.split(".")[2] for n in nodes if n.startswith(f"{kind}.")}


def test_a_delta_of_one_source_builds_what_it_reaches_and_the_incremental_models_they_read():
    manifest = json.loads(dbt.manifest_file().read_text())
    nodes, models = delta_nodes(manifest, ["education"])
    built = _names(nodes, "model")
    # education reaches citizens (enrolments, through identity resolution) and the statistics, not enterprises
    assert {"citizens", "identity_exceptions", "province_statistics", "data_quality_summary"} <= set(models)
    assert "enterprises" not in models and "stg_enterprise__enterprises" not in built
    # the incremental models citizens reads are made current first, even where education does not reach them
    assert {"int_citizens_located", "int_identities_resolved", "int_citizens_changed"} <= built
    # whole-table data tests of staging and intermediate models run on full builds; the shared ones run here
    attached = {manifest["nodes"][n].get("attached_node") or "" for n in nodes if n.startswith("test.")}
    assert "model.ndc.citizens" in attached and "model.ndc.int_citizens_changed" in attached
    assert not any(a.startswith(("model.ndc.stg_", "model.ndc.int_identities", "model.ndc.int_citizens_located"))
                   for a in attached)
    assert "unit_test.ndc.int_citizens_located.province_mapping_at_the_2025_boundary" in nodes


def test_every_source_reaches_every_shared_model_it_feeds_and_the_arguments_name_them():
    manifest = json.loads(dbt.manifest_file().read_text())
    nodes, models = delta_nodes(manifest, None)
    assert set(models) == set(dbt.shared_models())
    plan = RunPlan(conform_seq=7, mode="delta", reason="test", build_schema="shared_delta",
                   published_schema="shared_a", sources=None, models=models, nodes=nodes)
    args = plan.dbt_args(manifest)
    assert args[0] == "--select" and args[-2:] == ["--indirect-selection", "empty"]
    assert "ndc.shared.citizens" in args and not any(a.startswith("ndc.staging") and "__" not in a for a in args)
    assert plan.dbt_vars() == {"ndc_build_schema": "shared_a", "ndc_conform_mode": "delta", "ndc_conform_seq": 7,
                               "ndc_published": {}}
    full = RunPlan(conform_seq=8, mode="full", reason="test", build_schema="shared_b", published_schema="shared_a",
                   sources=None, models=models)
    assert full.dbt_args() == ["--full-refresh"] and full.dbt_vars()["ndc_build_schema"] == "shared_b"
