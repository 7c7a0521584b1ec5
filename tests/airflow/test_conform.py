"""The conform DAG's plan (which dbt nodes each Airflow task reports) and verdicts (a task's outcome from the
results dbt recorded), from the real manifest; the DAG runs for real in test_airflow_run and `ndc bench conform`."""

from __future__ import annotations

import json

from ndc.conform import dbt
from ndc.conform.dbt_build import PRODUCER, plan, verdict


def test_every_model_seed_and_snapshot_is_a_task_and_every_test_is_covered_once():
    manifest = json.loads(dbt.manifest_file().read_text())
    nodes = plan()
    built = {u for u, n in manifest["nodes"].items() if n["resource_type"] in ("model", "seed", "snapshot")
             and n["config"]["materialized"] != "ephemeral"}  # compiled into its readers: no task, no result
    assert set(nodes) == built and len(built) >= 30
    covered = [u for n in nodes.values() for u in n["covers"] if not u.startswith(("model.", "seed.", "snapshot."))]
    node_tests = {u for u, n in manifest["nodes"].items() if n["resource_type"] == "test"
                  and any(p in built for p in n["depends_on"]["nodes"])}
    assert sorted(covered) == sorted(node_tests | set(manifest["unit_tests"]))  # each exactly once


def test_a_test_runs_in_the_task_of_its_last_built_parent():
    nodes = plan()
    citizens = next(n for u, n in nodes.items() if u == "model.ndc.citizens")
    # citizens -> stg_population__households: the test belongs to citizens (built after households), never to
    # households, where it would test the previous build (docs/conform-publish.md, "found the hard way").
    assert any("relationships_citizens_household_id" in u for u in citizens["covers"])
    households = nodes["model.ndc.stg_population__households"]
    assert not any("relationships_citizens" in u for u in households["covers"])


def test_verdicts():
    covers = ["model.ndc.x", "test.ndc.unique_x"]
    running = {PRODUCER: ("running", None)}
    assert verdict(running, covers)[0] == "wait"
    assert verdict({**running, "model.ndc.x": ("success", None)}, covers)[0] == "wait"
    assert verdict({**running, "model.ndc.x": ("success", None), "test.ndc.unique_x": ("pass", None)},
                   covers) == ("success", "ok")
    failed = verdict({**running, "model.ndc.x": ("success", None), "test.ndc.unique_x": ("fail", "Got 3 results")},
                     covers)
    assert failed[0] == "failed" and "unique_x" in failed[1] and "Got 3 results" in failed[1]
    ended = {PRODUCER: ("exit 1", None)}
    assert verdict(ended, covers)[0] == "failed"  # dbt ended without a result for this node: never success
    assert verdict({**ended, "model.ndc.x": ("skipped", None), "test.ndc.unique_x": ("skipped", None)},
                   covers)[0] == "skipped"
