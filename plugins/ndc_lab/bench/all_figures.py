"""``ndc bench`` with no subcommand: every figure of the performance targets in one invocation, on data it
generates, each ratio against a baseline measured in the same invocation; one table at the end and a JSON file
(so figures can be compared between versions).

Parts (``--skip`` leaves any out; a part that fails is recorded as failed and the others still run):

- ``parse``: the sum of per-file DAG parse times, each ``dags/*.py`` file parsed by a ``DagBag`` in a fresh
  subprocess with the warehouse, every source connection and Airflow's metadata database pointing at a closed
  port (nothing may be reached at parse time); the parse only is timed (``DagBag``'s own per-file duration).
- ``el``: :func:`ndc_lab.bench.extract_load.run` (``ndc bench el``) at every ``--rows`` size: validated EL ÷ the
faster raw COPY
  pipe, ÷ GenericTransfer-style and psycopg 3 pipelined ``executemany``, peak RSS of each size's load in a fresh
  subprocess and its growth from the smallest to the largest size, the no-change incremental rerun ÷ the full load.
- ``dlt``: dlt's fastest merge configuration (ConnectorX, merge on the key) into PostgreSQL on the largest size's
  table, with the ``bench`` extra installed (``pip install -e .[bench]``; CI does not); needs ``el``.
- ``conform`` / ``change``: :mod:`ndc_lab.bench.conform` on a warehouse loaded with the five simulated sources at
  ``--citizens``: the conform DAG ÷ plain ``dbt build`` (median of ``--runs`` paired runs), and the DAG after a
  1 % change ÷ the same DAG on a full refresh, end to end (gate, build, publish).
- ``demo``: ``ndc demo --citizens N`` in a subprocess on its own embedded server (fresh data directory under
  /var/tmp, its own port), then ``ndc stop``; wall time.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ndc.settings import REPO_ROOT
from ndc_lab import cluster
from ndc_lab.demo import ndc_command

PARTS = ("parse", "el", "dlt", "conform", "change", "demo")
GT = "psycopg2 executemany (GenericTransfer-style)"
PG3 = "psycopg 3 pipelined executemany"
OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b}


@dataclass
class Options:
    server: str | None = None           # PostgreSQL server for el/dlt/conform (None: the warehouse's)
    sizes: list[int] = field(default_factory=lambda: [1_000_000, 5_000_000])
    citizens: int = 100_000
    runs: int = 3
    share: float = 0.01
    skip: set[str] = field(default_factory=set)
    port: int = 8080                    # Airflow's API server for conform/change
    airflow_db: str = "ndc_bench_airflow"
    prefix: str = "ndc_bench"           # databases of the el/dlt parts


@dataclass
class Figure:
    key: str
    label: str
    target: tuple[str, float] | None = None  # applies to ratio when there is a baseline, else to measured
    measured: float | None = None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    status: str = "pending"                   # measured | skipped | not installed | failed | pending
    note: str = ""

    @property
    def met(self) -> bool | None:
        value = self.ratio if self.baseline is not None else self.measured
        if self.target is None or value is None:
            return None
        return OPS[self.target[0]](value, self.target[1])

    def update(self, **values) -> None:
        """Set fields; the figure counts as measured unless ``status`` is given."""
        for name, value in values.items():
            setattr(self, name, value)
        if "status" not in values:
            self.status = "measured"

    def as_json(self) -> dict:
        out = asdict(self)
        out["target"] = f"{self.target[0]} {self.target[1]:g}" if self.target else None
        out["met"] = self.met
        return out


def plan(options: Options) -> dict[str, list[Figure]]:
    """Every figure the run reports, per part (placeholders until measured)."""
    sizes, last = options.sizes, options.sizes[-1]
    el: list[Figure] = []
    for n in sizes:
        el += [Figure(f"el_over_raw_copy@{n}", f"validated EL ÷ faster raw COPY pipe, {n:,} rows", (">=", 0.6)),
               Figure(f"el_over_generic_transfer@{n}", f"validated EL ÷ GenericTransfer-style executemany, {n:,}"
                      " rows"),
               Figure(f"el_over_psycopg3_executemany@{n}", f"validated EL ÷ psycopg 3 pipelined executemany, {n:,}"
                      " rows"),
               Figure(f"el_with_latest_over_raw_copy@{n}", f"validated EL incl. the latest-state upsert ÷ faster raw"
                      f" COPY pipe, {n:,} rows"),
               Figure(f"peak_rss_mb@{n}", f"peak RSS of the load (fresh process), {n:,} rows", ("<=", 600)),
               Figure(f"no_change_over_full_load@{n}", f"no-change incremental rerun ÷ full load, {n:,} rows",
                      ("<=", 0.05))]
    el.append(Figure(f"rerun_merge_over_first_merge@{sizes[0]}", f"merge of a rerun of the merged interval ÷ the"
                     f" first merge, {sizes[0]:,} rows"))
    if len(sizes) > 1:
        el.append(Figure("peak_rss_growth", f"peak RSS at {last:,} ÷ at {sizes[0]:,} rows", ("<=", 1.2)))
    return {
        "parse": [Figure("dag_parse_s", "DAG parse time: sum of per-file parse times, no database", ("<", 1.0))],
        "el": el,
        "dlt": [Figure(f"el_over_dlt_sql_database@{last}", f"validated EL ÷ dlt sql_database, {last:,} rows")],
        "conform": [Figure("conform_dag_over_dbt_build", f"conform DAG ÷ plain dbt build, {options.citizens:,}"
                           " citizens", ("<=", 1.3))],
        "change": [Figure("conform_change_over_full_refresh", f"conform DAG after a {options.share:.0%} change ÷"
                          f" full refresh, {options.citizens:,} citizens", ("<=", 0.15))],
        "demo": [Figure("demo_s", f"ndc demo end to end, {options.citizens:,} citizens")],
    }


# ---------------------------------------------------------------------------------------------------- parse

def measure_parse(dags_dir: Path = REPO_ROOT / "dags") -> dict:
    """Per-file parse seconds of every DAG file in ``dags_dir`` (the agency files in ``extract/`` included), as
    :func:`ndc_lab.bench.scale.parse_bundle` parses them; raises on import errors."""
    from ndc_lab.bench.scale import parse_bundle

    with tempfile.TemporaryDirectory() as home:
        found = parse_bundle(dags_dir, Path(home))
    if found["errors"] or not found["dags"]:
        raise RuntimeError(f"{dags_dir}: import errors {found['errors']}, DAGs {found['dags']}")
    return {"files": found["files"], "seconds": sum(found["files"].values())}


def part_parse(options: Options, figures: dict[str, Figure], echo) -> dict:
    details = measure_parse()
    figures["dag_parse_s"].update(measured=details["seconds"], unit="s",
                                  note=", ".join(f"{k} {v:.2f}" for k, v in details["files"].items()))
    return details


# ------------------------------------------------------------------------------------------------------ el

def part_el(options: Options, figures: dict[str, Figure], echo) -> dict:
    from ndc_lab.bench import extract_load

    keep = "dlt" not in options.skip  # dlt reads the last size's source table
    details = extract_load.run(_server(options), options.sizes, echo, keep=keep, prefix=options.prefix)
    for size in details["sizes"]:
        n, b = size["rows"], size["b_rows_per_s"]
        fastest = max(size["raw"], key=size["raw"].get)
        figures[f"el_over_raw_copy@{n}"].update(measured=b, unit="rows/s", baseline=size["a_rows_per_s"],
                                                 baseline_label=fastest, ratio=size["b_over_a"])
        for key, method, short in ((f"el_over_generic_transfer@{n}", GT, "psycopg2"),
                                   (f"el_over_psycopg3_executemany@{n}", PG3, "psycopg 3")):
            rate = details["baselines"][method]
            figures[key].update(measured=b, unit="rows/s", baseline=rate, baseline_label=short, ratio=b / rate)
        figures[f"el_with_latest_over_raw_copy@{n}"].update(
            measured=n / size["full_load_s"], unit="rows/s", baseline=size["a_rows_per_s"], baseline_label=fastest,
            ratio=size["b_plus_c_over_a"])
        if "rerun_merge_s" in size:
            figures[f"rerun_merge_over_first_merge@{n}"].update(
                measured=size["rerun_merge_s"], unit="s", baseline=size["full_load_s"] - size["staging_s"],
                baseline_label="first merge", ratio=size["rerun_merge_over_first"])
        figures[f"peak_rss_mb@{n}"].update(measured=size["peak_rss_mb"], unit="MB")
        figures[f"no_change_over_full_load@{n}"].update(
            measured=size["no_change_s"], unit="s", baseline=size["full_load_s"], baseline_label="full load",
            ratio=size["no_change_over_full"])
    if len(details["sizes"]) > 1:
        first, last = details["sizes"][0], details["sizes"][-1]
        figures["peak_rss_growth"].update(measured=last["peak_rss_mb"], unit="MB", baseline=first["peak_rss_mb"],
                                          baseline_label=f"{first['rows']:,} rows", ratio=details["rss_growth"])
    return details


# ----------------------------------------------------------------------------------------------------- dlt

def part_dlt(options: Options, figures: dict[str, Figure], echo, el: dict | None) -> dict:
    from ndc.warehouse import connections
    from ndc_lab.bench.extract_load import DLT_CONFIG, dlt_installed, dlt_merge

    figure = figures[f"el_over_dlt_sql_database@{options.sizes[-1]}"]
    if not dlt_installed():
        figure.update(status="not installed", note="pip install -e .[bench] to measure it")
        return {"installed": False}
    if not el:
        raise RuntimeError("needs the el part (its source table and its validated-load rate)")
    server = _server(options)
    source = connections.with_database(server, f"{options.prefix}_source")
    target = connections.with_database(server, f"{options.prefix}_dlt")
    result = dlt_merge(source, target)
    size = el["sizes"][-1]
    rate = size["rows"] / result["seconds"]
    figure.update(measured=size["b_rows_per_s"], unit="rows/s", baseline=rate,
                  baseline_label=f"dlt {result['version']} ({DLT_CONFIG})", ratio=size["b_rows_per_s"] / rate)
    return {"installed": True, **result, "rows_per_s": rate}


def clean_up(options: Options, state: dict) -> list[str]:
    """Drop the databases the run used: el's, the conform warehouse with its ledger anchor, and the Airflow metadata
    database if its name starts with ``ndc_bench`` (one it was pointed at is left alone); returns what could not
    be dropped."""
    from ndc.audit import anchor
    from ndc.warehouse import connections, database

    urls = []
    if "el" not in options.skip:
        urls += [connections.with_database(_server(options), f"{options.prefix}_{suffix}")
                 for suffix in ("source", "raw", "warehouse", "dlt")]
    if "conform_url" in state:
        conform = state["conform_url"]
        urls += [conform, connections.with_database(conform, connections.database_of(conform) + anchor.SUFFIX)]
        if options.airflow_db.startswith("ndc_bench"):  # never a database the bench was pointed at but did not make
            urls.append(connections.with_database(conform, options.airflow_db))
    problems = []
    for url in urls:
        try:
            database.drop_database(url)
        except Exception as exc:  # the figures matter more than a database left behind
            problems.append(f"could not drop {connections.redact(url)}: {exc}")
    return problems


# ---------------------------------------------------------------------------------------- conform / change

def conform_warehouse(options: Options, state: dict, echo) -> str:
    """The bench warehouse with the five sources loaded at ``--citizens`` (once per invocation)."""
    if "conform_url" not in state:
        from ndc_lab.bench import conform

        began = time.perf_counter()
        state["conform_url"] = conform.load_bench_warehouse(_server(options), options.citizens)
        echo(f"[bench] conform warehouse loaded at {options.citizens:,} citizens in "
             f"{time.perf_counter() - began:.1f} s")
    return state["conform_url"]


def part_conform(options: Options, figures: dict[str, Figure], echo, state: dict) -> dict:
    from ndc_lab.bench import conform

    url = conform_warehouse(options, state, echo)
    details = conform.measure(url, runs=options.runs, airflow_db=options.airflow_db, port=options.port)
    runs = sorted(details["runs"], key=lambda r: r["ratio"])
    median = runs[len(runs) // 2]  # the run whose ratio is the median, so measured ÷ baseline = ratio
    figures["conform_dag_over_dbt_build"].update(
        measured=median["dag_s"], unit="s", baseline=median["dbt_build_s"], baseline_label="plain dbt build",
        ratio=median["dag_s"] / median["dbt_build_s"],
        note=f"median of {len(runs)} runs; ratios {details['ratios']}")
    return details


def part_change(options: Options, figures: dict[str, Figure], echo, state: dict) -> dict:
    from ndc_lab.bench import conform

    url = conform_warehouse(options, state, echo)
    details = conform.measure_change(url, share=options.share, airflow_db=options.airflow_db,
                                     port=options.port, runs=1)
    figures["conform_change_over_full_refresh"].update(
        measured=details["after_change_dag_s"][0], unit="s", baseline=details["full_refresh_dag_s"][0],
        baseline_label="full refresh", ratio=details["ratio"],
        note=f"{sum(details['rows_changed'].values()):,} landing rows changed; peak shared storage during the"
             f" delta {details['disk_peak_ratio']} x the published tables")
    return details


# ---------------------------------------------------------------------------------------------------- demo

def measure_demo(citizens: int) -> dict:
    """Wall time of ``ndc demo --citizens N`` on a fresh embedded server of its own (stopped and removed after)."""
    data_dir = Path(tempfile.mkdtemp(prefix="ndc-bench-demo-", dir="/var/tmp"))
    data_dir.chmod(0o755)  # not a 0700 folder: the server runs as its own user when we are root
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NDC_", "AIRFLOW"))}
    env.update(NDC_DATA_DIR=str(data_dir), NDC_EMBEDDED_PORT=str(cluster.free_port()))
    try:
        began = time.perf_counter()
        out = subprocess.run([ndc_command(), "demo", "--citizens", str(citizens)], env=env, capture_output=True,
                             text=True, check=False)
        seconds = time.perf_counter() - began
    finally:
        subprocess.run([ndc_command(), "stop"], env=env, capture_output=True, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
    if out.returncode:
        raise RuntimeError(f"ndc demo failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    stages = out.stdout.split("time per stage:", 1)[-1].split("\n\n", 1)[0]
    return {"seconds": seconds, "stages": [line.strip() for line in stages.splitlines()
                                           if re.match(r"\s+[\d.]+ s ", line)]}


def part_demo(options: Options, figures: dict[str, Figure], echo) -> dict:
    details = measure_demo(options.citizens)
    figures["demo_s"].update(measured=details["seconds"], unit="s",
                             note="; ".join(details["stages"][-1:]) + " (the demo's own stage sum)")
    return details


# ----------------------------------------------------------------------------------------------- the run

def _server(options: Options) -> str:
    if options.server is None:
        from ndc.warehouse import embedded

        options.server = embedded.ensure_warehouse()
    return options.server


def _git_commit() -> str | None:
    out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=False)
    return out.stdout.strip() or None


def run_all(options: Options, echo: Callable[[str], None] = print) -> dict:
    """Run every part not skipped; returns the JSON document (figures, details per part, failures)."""
    planned = plan(options)
    figures = {f.key: f for group in planned.values() for f in group}
    details: dict[str, dict] = {}
    failed: dict[str, str] = {}
    state: dict = {}
    steps: dict[str, Callable[[], dict]] = {
        "parse": lambda: part_parse(options, figures, echo),
        "el": lambda: part_el(options, figures, echo),
        "dlt": lambda: part_dlt(options, figures, echo, details.get("el")),
        "conform": lambda: part_conform(options, figures, echo, state),
        "change": lambda: part_change(options, figures, echo, state),
        "demo": lambda: part_demo(options, figures, echo),
    }
    started = datetime.now(UTC)
    for part in PARTS:
        if part in options.skip:
            for figure in planned[part]:
                figure.status = "skipped"
            continue
        echo(f"[bench] {part}: start")
        began = time.perf_counter()
        try:
            details[part] = steps[part]()
        except Exception as exc:  # one failed part must not lose the others' figures
            failed[part] = "".join(traceback.format_exception_only(exc)).strip()
            for figure in planned[part]:
                if figure.status == "pending":
                    figure.status = "failed"
            echo(f"[bench] {part}: FAILED after {time.perf_counter() - began:.1f} s: {failed[part][:2000]}")
            continue
        echo(f"[bench] {part}: done in {time.perf_counter() - began:.1f} s")
    problems = clean_up(options, state)
    if problems:  # reported with the figures, never instead of them
        failed["cleanup"] = "; ".join(problems)
        echo(f"[bench] clean-up: {failed['cleanup']}")
    return {"version": 1, "started_at": started.isoformat(), "finished_at": datetime.now(UTC).isoformat(),
            "git_commit": _git_commit(), "host": {"node": platform.node(), "cpus": os.cpu_count(),
                                                  "python": platform.python_version()},
            "options": {**asdict(options), "skip": sorted(options.skip)},
            "figures": {key: f.as_json() for key, f in figures.items()}, "failed": failed, "details": details}


def default_json_path() -> Path:
    return REPO_ROOT / "results" / "bench" / f"bench-{datetime.now(UTC):%Y-%m-%d}.json"


def write_json(document: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    return f"{value:.3f} {unit}".rstrip() if value < 1 else f"{value:,.2f} {unit}".rstrip()


def table(document: dict) -> str:
    """The one table: figure | measured | baseline | ratio | target | met?"""
    rows = [("figure", "measured", "baseline", "ratio", "target", "met?")]
    for f in document["figures"].values():
        if f["status"] != "measured":
            rows.append((f["label"], f["status"], "", "", f["target"] or "reported", ""))
            continue
        baseline = _number(f["baseline"], f["unit"]) + (f" ({f['baseline_label']})" if f["baseline_label"] else "")
        met = {True: "yes", False: "NO", None: ""}[f["met"]]
        rows.append((f["label"], _number(f["measured"], f["unit"]), baseline if f["baseline"] is not None else "–",
                     "–" if f["ratio"] is None else f"{f['ratio']:.3f}", f["target"] or "reported", met))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
