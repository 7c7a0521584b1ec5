"""``ndc bench`` (the umbrella, no subcommand) on tiny sizes: every figure's key is in the JSON, measured parts
have numbers, and the table names every figure. No assertion on any timing: performance figures never come from
unit tests (the machine is shared and noisy, and the sizes are far too small to mean anything)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database

# The JSON's figure keys are what versions are compared by: changing one is a deliberate act.
EL_KEYS = ["el_over_raw_copy", "el_over_generic_transfer", "el_over_psycopg3_executemany",
           "el_with_latest_over_raw_copy", "peak_rss_mb", "no_change_over_full_load"]
SIZES = [2000, 4000]
MEASURED = ["dag_parse_s", *(f"{k}@{n}" for n in SIZES for k in EL_KEYS), f"rerun_merge_over_first_merge@{SIZES[0]}",
            "peak_rss_growth"]
SKIPPED = ["conform_dag_over_dbt_build", "conform_change_over_full_refresh", "demo_s"]
DLT = f"el_over_dlt_sql_database@{SIZES[-1]}"


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.slow
def test_bench_umbrella_reports_every_figure_in_json_and_one_table(pg_server, tmp_path):
    prefix = f"ndc_bench_t{uuid.uuid4().hex[:8]}"
    out_path = tmp_path / "bench.json"
    ndc = Path(sys.executable).parent / "ndc"
    args = [str(ndc), "bench", "--server", pg_server, "--db-prefix", prefix, "--json-out", str(out_path),
            "--runs", "1", "--citizens", "1000", "--skip", "conform,change", "--skip", "demo"]
    for rows in SIZES:
        args += ["--rows", str(rows)]
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    finally:
        for suffix in ("source", "raw", "warehouse", "dlt"):
            drop_database(with_database(pg_server, f"{prefix}_{suffix}"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    document = json.loads(out_path.read_text())
    figures = document["figures"]
    assert sorted(figures) == sorted([*MEASURED, *SKIPPED, DLT])
    assert document["failed"] == {} and document["options"]["sizes"] == SIZES
    for key in MEASURED:
        figure = figures[key]
        assert figure["status"] == "measured", key
        assert _number(figure["measured"]), key
        if figure["baseline"] is not None:
            assert _number(figure["baseline"]) and _number(figure["ratio"]), key
        assert figure["target"] is None or isinstance(figure["met"], bool), key
    targets = {key: figures[key]["target"] for key in figures if figures[key]["target"]}
    assert targets == {"dag_parse_s": "< 1", "peak_rss_growth": "<= 1.2", "conform_dag_over_dbt_build": "<= 1.3",
                       "conform_change_over_full_refresh": "<= 0.15",
                       **{f"el_over_raw_copy@{n}": ">= 0.6" for n in SIZES},
                       **{f"peak_rss_mb@{n}": "<= 600" for n in SIZES},
                       **{f"no_change_over_full_load@{n}": "<= 0.05" for n in SIZES}}  # the targets
    for key in (f"el_over_raw_copy@{SIZES[-1]}", f"el_over_psycopg3_executemany@{SIZES[-1]}",
                f"el_over_generic_transfer@{SIZES[-1]}", f"no_change_over_full_load@{SIZES[-1]}", "peak_rss_growth"):
        assert _number(figures[key]["baseline"]), f"{key}: a ratio needs its baseline from the same run"
    assert figures[DLT]["status"] in ("measured", "not installed")
    assert all(figures[key]["status"] == "skipped" for key in SKIPPED)
    dags = Path(__file__).parents[2] / "dags"
    assert set(document["details"]["parse"]["files"]) == {p.relative_to(dags).as_posix() for p in dags.rglob("*.py")
                                                          if "__pycache__" not in p.parts}

    lines = run.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("figure ") and "| measured" in line)
    assert [c.strip() for c in lines[header].split("|")] == ["figure", "measured", "baseline", "ratio", "target",
                                                             "met?"]
    table = "\n".join(lines[header:])
    for figure in figures.values():
        assert figure["label"] in table, figure["label"]
    for part in ("parse", "el", "dlt"):
        assert f"[bench] {part}: start" in run.stdout and f"[bench] {part}: done in" in run.stdout
    print(table)
