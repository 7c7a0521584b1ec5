"""One ``dbt build`` of the project into a build schema, each node's result recorded as dbt reports it.

The conform DAG's ``dbt.build`` task and ``ndc dbt build`` run this same function. Results go to
``ndc_meta.conform_nodes`` (the warehouse: workers and the triggerer both reach it), where the conform DAG's node
tasks read them; :func:`plan` says which dbt nodes each of those tasks reports, :func:`verdict` what a task's
outcome is from the recorded results.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

from ndc.conform import dbt

log = logging.getLogger(__name__)

STATUS_TABLE = "ndc_meta.conform_nodes"
PRODUCER = "__producer__"
OK = {"success", "pass", "warn", "no-op", "unaffected"}  # no-op: exposures; unaffected: not in a delta
FAILED = {"error", "fail", "runtime error"}


def record(conn, run_id: str, unique_id: str, status: str, message: str | None = None) -> None:
    conn.execute(f"insert into {STATUS_TABLE} (run_id, unique_id, status, message) values (%s, %s, %s, %s)"
                 " on conflict (run_id, unique_id) do update set status = excluded.status,"
                 " message = excluded.message, updated_at = now()", (run_id, unique_id, status, message))


def plan(manifest_path: Path | None = None) -> dict[str, dict]:
    """``{unique_id: {"name", "type", "covers": [unique ids], "upstream": [unique ids]}}`` for models and seeds.

    Each data test goes to its last-built model/seed parent (dbt's "buildable" rule), unit tests to their model;
    tests on sources only are covered by ``dbt.build`` itself."""
    manifest = json.loads((manifest_path or dbt.manifest_file()).read_text())
    nodes = manifest["nodes"]
    built = {uid: n for uid, n in nodes.items() if n["resource_type"] in ("model", "seed", "snapshot")
             and n["config"].get("materialized") != "ephemeral"}  # an ephemeral model is compiled into its readers
    depth: dict[str, int] = {}

    def level(uid: str) -> int:
        if uid not in depth:
            parents = [p for p in built[uid]["depends_on"].get("nodes", []) if p in built]
            depth[uid] = 1 + max((level(p) for p in parents), default=-1)
        return depth[uid]

    result = {uid: {"name": n["name"], "type": n["resource_type"], "covers": [uid],
                    "upstream": sorted(p for p in n["depends_on"].get("nodes", []) if p in built)}
              for uid, n in built.items()}
    for uid, n in nodes.items():
        if n["resource_type"] != "test":
            continue
        parents = [p for p in n["depends_on"].get("nodes", []) if p in built]
        if parents:
            result[max(parents, key=lambda p: (level(p), p))]["covers"].append(uid)
    for uid, n in manifest.get("unit_tests", {}).items():
        for parent in n["depends_on"].get("nodes", []):
            if parent in result:
                result[parent]["covers"].append(uid)
                break
    return result


def verdict(statuses: dict[str, tuple[str, str | None]], covers: list[str]) -> tuple[str, str]:
    """``("success" | "failed" | "skipped" | "wait", message)`` of a node task from the recorded results."""
    bad = [f"{u}: {statuses[u][0]} {statuses[u][1] or ''}".strip() for u in covers
           if u in statuses and statuses[u][0] in FAILED]
    if bad:
        return "failed", "; ".join(bad)
    if all(u in statuses and statuses[u][0] in OK for u in covers):
        return "success", "ok"
    producer = statuses.get(PRODUCER)
    if producer is None or producer[0] == "running":
        return "wait", ""
    missing = [u for u in covers if u not in statuses]
    if missing:
        return "failed", f"dbt build ended ({producer[0]}) without a result for {missing}"
    return "skipped", "skipped by dbt build (an upstream node failed)"


UNAFFECTED = "unaffected"  # a node a delta run does not build: nothing it reads changed


def _command(build_schema: str | dict, covered: set[str], full_refresh: bool) -> tuple[list[str], list[str], str]:
    """The dbt command, the covered nodes it does not build (a delta's) and why."""
    from ndc.conform.run_plan import RunPlan

    if isinstance(build_schema, dict):
        plan = RunPlan.from_dict(build_schema)
        command = dbt.command(["build", "--log-format", "json", *plan.dbt_args()], dbt_vars=plan.dbt_vars())
        return command, sorted(covered - set(plan.nodes)) if plan.is_delta else [], plan.reason
    command = dbt.command(["build", "--log-format", "json", *(["--full-refresh"] if full_refresh else [])],
                          build_schema)
    return command, [], ""


def run_dbt_build(build_schema: str | dict, run_id: str, covered: set[str], full_refresh: bool = False) -> dict:
    """``dbt build`` for a conform run, recording each node's result as dbt reports it. ``build_schema``: the
    run's plan (``ndc.conform.run_plan.RunPlan.as_dict``: a full build of the project with ``--full-refresh``, or a
    delta's nodes, every other node recorded ``unaffected`` first), or, by hand, the build schema of a full build of
    the whole project (``full_refresh``: incremental models rebuilt from scratch)."""
    from ndc.errors import NdcError
    from ndc.settings import dbt_environment, get_settings
    from ndc.warehouse import database

    command, unaffected, why = _command(build_schema, covered, full_refresh)
    counts: dict[str, int] = {}
    started = time.monotonic()
    with database.connect(get_settings().warehouse_url) as conn:
        conn.autocommit = True
        database.ensure_meta(conn)  # ndc_meta.conform_nodes is part of the platform's schema
        conn.execute(f"delete from {STATUS_TABLE} where run_id = %s", (run_id,))
        record(conn, run_id, PRODUCER, "running")
        for uid in unaffected:
            record(conn, run_id, uid, UNAFFECTED, f"not built: {why} do not reach it")
        process = subprocess.Popen(command, env=dbt_environment(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                log.info("%s", line.rstrip())
                continue
            data, name = event.get("data", {}), event.get("info", {}).get("name", "")
            log.info("%s", event.get("info", {}).get("msg", ""))
            if name.startswith("Log") and name.endswith("Result") and "node_info" in data:
                uid = data["node_info"].get("unique_id")
                status = data["node_info"].get("node_status") or data.get("status")
                if uid and status:
                    record(conn, run_id, uid, str(status).lower(), None if status in OK else str(data.get("status")))
        returncode = process.wait()
        failures = []
        results_file = dbt.project_dir() / "target" / "run_results.json"
        if results_file.exists():
            for r in json.loads(results_file.read_text()).get("results", []):
                status = str(r["status"]).lower()
                counts[status] = counts.get(status, 0) + 1
                record(conn, run_id, r["unique_id"], status, r.get("message"))
                if status not in OK and r["unique_id"] not in covered:
                    failures.append(f"{r['unique_id']}: {status} {r.get('message') or ''}")
        record(conn, run_id, PRODUCER, f"exit {returncode}")
    seconds = round(time.monotonic() - started, 2)
    log.info("dbt build exit %s in %s s, results %s", returncode, seconds, counts)
    if returncode not in (0, 1) or failures:
        raise NdcError(f"dbt build failed (exit {returncode}) outside the node tasks: {failures or 'see log'}")
    return {"exit": returncode, "seconds": seconds, "results": counts}
