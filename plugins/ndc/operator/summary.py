"""The operator's figures per dataset, as plain JSON-ready data (the page and ``/ndc/api/*`` show the same).

* **Sources** are the landing datasets of the source registry (``<source>.<table>``, plus any the ledger knows);
  **shared datasets** are the shared models of the dbt manifest (``shared.<relation>``, plus any the ledger knows).
* **Freshness** uses the thresholds of the dbt sources (``freshness`` with a ``loaded_at_field``, read by
  :mod:`ndc.conform.freshness`): a landing dataset is judged on when a successful extract (or replay) last brought rows
  into it, from the ledger; a shared dataset on its last successful publish, against the strictest thresholds of
  the dbt sources it is built from (``parent_map`` of the manifest). Statuses are the conform gate's: ``pass``,
  ``warn``, ``error``, ``never_loaded``, ``missing`` (the landing table is gone), and ``no_sla`` (no thresholds).
* **Last load**: the latest extract (``extract_<source>`` DAG) or publish (``conform`` DAG) in the ledger, with a
  link to its Airflow run.
* **Needs attention** leads, at any number of sources: a landing dataset whose last load **failed**, that is
  **late** (past its dbt freshness threshold, its table gone, or by its own schedule: no successful extract since
  the tick before its last one, i.e. a whole interval missed, a source never loaded included), or that is
  **quarantining** (rows open in quarantine). The full list is searched (``q``: dataset, source, agency folder
  or owner) and paged (``page``, ``per_page``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from ndc.config.sources import agency_of, load_sources
from ndc.conform import dbt, freshness
from ndc.errors import NdcError
from ndc.settings import get_settings

from .views import Snapshot

PANELS = ("attention", "sources", "shared", "pass_rates", "quarantine", "sharing", "alerts")
PER_PAGE = 100
ATTENTION_SHOWN = 100
REASONS = ("failing", "late", "quarantining")


@dataclass(frozen=True)
class Sla:
    warn_after: timedelta | None
    error_after: timedelta | None
    sources: tuple[str, ...] = ()  # of a shared dataset: the source tables it is built from


@dataclass(frozen=True)
class Manifest:
    sources: dict[str, Sla]        # "<source>.<table>" → its thresholds
    shared: dict[str, Sla]         # "shared.<relation>" → the strictest thresholds of its sources


_cache: dict[tuple[str, int], Manifest] = {}


def read_manifest(path: Path) -> Manifest:
    """Thresholds from the dbt manifest (re-read when the file changes)."""
    key = (str(path), path.stat().st_mtime_ns if path.exists() else 0)
    if key not in _cache:
        declared = freshness.declared_sources(path)  # the gate's own reading: same sources, same rules
        sources = {}
        for source in declared:
            rules = source.get("freshness") or source["config"]["freshness"]
            sources[f"{source['source_name']}.{source['name']}"] = Sla(
                freshness.threshold(rules.get("warn_after")), freshness.threshold(rules.get("error_after")))
        manifest = json.loads(path.read_text())
        shared = {}
        for unique_id, node in manifest["nodes"].items():
            if node["resource_type"] == "model" and node["config"].get("schema") == "shared":
                upstream = _upstream_sources(manifest, unique_id)
                shared[f"shared.{node['alias']}"] = Sla(
                    _strictest(sources[s].warn_after for s in upstream if s in sources),
                    _strictest(sources[s].error_after for s in upstream if s in sources), tuple(sorted(upstream)))
        _cache.clear()
        _cache[key] = Manifest(sources, shared)
    return _cache[key]


def _upstream_sources(manifest: dict, unique_id: str) -> set[str]:
    seen, stack, found = set(), [unique_id], set()
    while stack:
        for parent in manifest["parent_map"].get(stack.pop(), []):
            if parent in seen:
                continue
            seen.add(parent)
            if parent.startswith("source."):
                source = manifest["sources"][parent]
                found.add(f"{source['source_name']}.{source['name']}")
            else:
                stack.append(parent)
    return found


def _strictest(limits) -> timedelta | None:
    return min((limit for limit in limits if limit is not None), default=None)


def judge(last: datetime | None, now: datetime, sla: Sla | None, exists: bool = True) -> tuple[str, timedelta | None]:
    """The conform gate's rule (:func:`ndc.conform.freshness.check`) on a last-load time."""
    if last is None:
        return "never_loaded", None
    age = now - last
    if not exists:
        return "missing", age
    if sla is None or (sla.warn_after is None and sla.error_after is None):
        return "no_sla", age
    if sla.error_after is not None and age > sla.error_after:
        return "error", age
    if sla.warn_after is not None and age > sla.warn_after:
        return "warn", age
    return "pass", age


def run_url(airflow_root: str, dag_id: str | None, run_id: str | None) -> str | None:
    """The Airflow UI's page of a DAG run."""
    if not dag_id or not run_id:
        return None
    return f"{airflow_root}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe=':+@=,')}"


def plain(value):
    """JSON-ready: ISO timestamps and dates, floats for numeric rates."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _row(row: dict, *names: str) -> dict:
    return {name: plain(row.get(name)) for name in names}


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def _last_load(row: dict | None, airflow_root: str) -> dict | None:
    if row is None:
        return None
    found = _row(row, "kind", "dag_id", "run_id", "recorded_at", "outcome", "rows_in", "rows_loaded",
                 "rows_quarantined", "duration_ms", "interval_start", "interval_end", "contract_version",
                 "last_success_at", "loads", "failed_loads")
    found["run_url"] = run_url(airflow_root, row.get("dag_id"), row.get("run_id"))
    return found


def _freshness(status: str, age: timedelta | None, last: datetime | None, sla: Sla | None) -> dict:
    return {"status": status, "last_loaded_at": plain(last), "age_seconds": _seconds(age),
            "warn_after_seconds": _seconds(sla.warn_after if sla else None),
            "error_after_seconds": _seconds(sla.error_after if sla else None),
            "sla_from": list(sla.sources) if sla and sla.sources else None}


# schedule -> (the tick before the last one, the next tick): recomputed only once the next tick has passed, so a
# page over thousands of schedules costs a dictionary lookup per source.
_ticks: dict[str, tuple[datetime, datetime, datetime]] = {}


def missed_interval_since(schedule: str, now: datetime) -> datetime | None:
    """The tick before the last tick of ``schedule``: a source with no successful extract since then missed a whole
    interval. None for a schedule croniter cannot read."""
    cached = _ticks.get(schedule)
    if cached is None or not (cached[2] > now >= cached[1]):
        from croniter import croniter

        try:
            moving = croniter(schedule, now)
            upcoming = moving.get_next(datetime)
            moving = croniter(schedule, now)
            last = moving.get_prev(datetime)
            before = moving.get_prev(datetime)
        except (ValueError, KeyError):
            return None
        cached = _ticks[schedule] = (before, last, upcoming)
    return cached[0]


def _late(source, last_extract: datetime | None, now: datetime) -> bool:
    if source is None:
        return False
    since = missed_interval_since(source.schedule, now)
    started = datetime(source.start_date.year, source.start_date.month, source.start_date.day, tzinfo=now.tzinfo)
    if since is None or since < started:
        return False  # not yet two ticks since the source started
    return last_extract is None or last_extract < since


def sources_panel(snapshot: Snapshot, manifest: Manifest | None, registry: list, airflow_root: str) -> list[dict]:
    loads = {r["dataset"]: r for r in snapshot.last_loads}
    inputs = {r["dataset"]: r for r in snapshot.freshness_inputs}
    open_rows = {r["dataset"]: r["open_rows"] for r in snapshot.quarantine if r["all_checks"]}
    declared = {f"{s.name}.{t.name}": (s, t) for s in registry for t in s.tables}
    ledger_only = {d for d in [*loads, *inputs] if not d.startswith("shared") and d not in declared}
    panel = []
    for dataset in [*declared, *sorted(ledger_only)]:
        source, _ = declared.get(dataset, (None, None))
        known = inputs.get(dataset, {})
        sla = manifest.sources.get(dataset) if manifest else None
        status, age = judge(known.get("last_loaded_at"), snapshot.now, sla, known.get("landing_table_exists", True))
        last = loads.get(dataset)
        reasons = []
        if last and last["outcome"] == "failed":
            reasons.append("failing")
        if status in ("error", "warn", "missing") or _late(source, known.get("last_extract_at"), snapshot.now):
            reasons.append("late")
        if open_rows.get(dataset):
            reasons.append("quarantining")
        panel.append({"dataset": dataset, "owner_agency": source.owner_agency if source else None,
                      "agency": agency_of(source) if source else None,
                      "schedule": source.schedule if source else None,
                      "landing_table": f"landing_{dataset}",
                      "freshness": _freshness(status, age, known.get("last_loaded_at"), sla),
                      "last_extract_at": plain(known.get("last_extract_at")),
                      "open_quarantine_rows": open_rows.get(dataset, 0),
                      "attention": reasons,
                      "last_load": _last_load(last, airflow_root)})
    return panel


def attention_panel(sources: list[dict], shown: int = ATTENTION_SHOWN) -> dict:
    """What needs an operator first: failing, then late, then quarantining (most open rows first)."""
    flagged = [s for s in sources if s["attention"]]
    flagged.sort(key=lambda s: (REASONS.index(s["attention"][0]), -s["open_quarantine_rows"], s["dataset"]))
    return {"total": len(flagged), "by_reason": {r: sum(r in s["attention"] for s in flagged) for r in REASONS},
            "shown": len(flagged[:shown]), "datasets": flagged[:shown]}


def page_of(sources: list[dict], q: str | None, page: int, per_page: int) -> tuple[list[dict], dict]:
    """The sources matching ``q`` (words, each in the dataset, agency folder or owner; case-insensitive), one page."""
    words = (q or "").lower().split()
    matching = [s for s in sources if all(w in f"{s['dataset']} {s['agency'] or ''} {s['owner_agency'] or ''}".lower()
                                          for w in words)] if words else sources
    pages = max(1, -(-len(matching) // per_page))
    page = min(max(1, page), pages)
    return (matching[(page - 1) * per_page: page * per_page],
            {"q": q or "", "page": page, "pages": pages, "per_page": per_page, "matching": len(matching),
             "total": len(sources), "sources": len({s["dataset"].split(".")[0] for s in sources})})


def shared_panel(snapshot: Snapshot, manifest: Manifest | None, registry: list, airflow_root: str) -> list[dict]:
    loads = {r["dataset"]: r for r in snapshot.last_loads}
    declared = manifest.shared if manifest else {}
    owners = {s.name: s.owner_agency for s in registry}
    publish = loads.get("shared")  # the latest publish attempt, whatever it published
    panel = []
    for dataset in [*sorted(declared), *sorted(d for d in loads if d.startswith("shared.") and d not in declared)]:
        sla = declared.get(dataset)
        row = loads.get(dataset) or (publish if publish and publish["outcome"] == "failed" else None)
        last = loads[dataset]["last_success_at"] if dataset in loads else None
        status, age = judge(last, snapshot.now, sla)
        panel.append({"dataset": dataset,
                      "owner_agencies": sorted({owners[s.split(".")[0]] for s in (sla.sources if sla else ())
                                                if s.split(".")[0] in owners}),
                      "freshness": _freshness(status, age, last, sla),
                      "last_load": _last_load(row, airflow_root)})
    return panel


_PASS = ("validations", "passed", "failed", "blocked", "rows_checked", "rows_failed", "row_pass_rate",
         "validation_pass_rate")


def pass_rates_panel(snapshot: Snapshot) -> dict:
    return {"days": [_row(r, "day", *_PASS) for r in snapshot.pass_rates_daily],
            "by_dataset": [_row(r, "dataset", "gate", *_PASS, "last_day") for r in snapshot.pass_rates_by_dataset]}


def quarantine_panel(snapshot: Snapshot) -> dict:
    datasets: dict[str, dict] = {}
    counts = ("open_rows", "rows_not_replayed", "rows_still_failing", "oldest_at", "newest_at")
    for r in snapshot.quarantine:
        if r["all_checks"]:
            datasets[r["dataset"]] = {"dataset": r["dataset"], **_row(r, *counts), "checks": []}
        else:
            datasets[r["dataset"]]["checks"].append({"check": r["check_name"] or "(none)", **_row(r, *counts)})
    found = list(datasets.values())
    return {"total_open": sum(d["open_rows"] for d in found), "datasets": found}


def sharing_panel(snapshot: Snapshot) -> dict:
    by_agency: dict[str, dict] = {}
    for r in snapshot.sharing_by_unit:
        entry = by_agency.setdefault(r["agency"], {"agency": r["agency"], "transactions": 0, "by_unit": {}})
        entry["transactions"] += r["transactions"]
        entry["by_unit"][r["unit"]] = r["transactions"]
    return {"total": sum(a["transactions"] for a in by_agency.values()),
            "by_agency": sorted(by_agency.values(), key=lambda a: a["agency"]),
            "by_day": [_row(r, "day", "agency", "transactions") for r in snapshot.sharing_daily]}


def alerts_panel(snapshot: Snapshot, airflow_root: str) -> list[dict]:
    return [{"dataset": r["dataset"], "check": r["check_name"],
             **_row(r, "failures", "first_failed_at", "last_failed_at", "dag_id", "task_id", "owner_agency",
                    "last_run_id"),
             "run_url": run_url(airflow_root, r["dag_id"], r["last_run_id"])} for r in snapshot.alerts]


def summarise(snapshot: Snapshot, days: int, airflow_root: str = "", *, q: str | None = None, page: int = 1,
              per_page: int = PER_PAGE) -> dict:
    """Every panel, with the notices of what could not be read (the dbt manifest, the source registry). Sources:
    one page of those matching ``q``; ``attention``: what needs an operator, over every source."""
    notices = []
    try:
        manifest = read_manifest(dbt.manifest_file())
    except (NdcError, OSError, KeyError, ValueError) as exc:
        manifest = None
        notices.append(f"no freshness thresholds: {exc}")
    try:
        registry = load_sources(get_settings().sources_dir)
    except NdcError as exc:
        registry = []
        notices.append(f"the source registry could not be read: {exc}")
    sources = sources_panel(snapshot, manifest, registry, airflow_root)
    shown, paging = page_of(sources, q, page, per_page)
    return {"generated_at": plain(snapshot.now), "days": days, "since": plain(snapshot.since), "notices": notices,
            "attention": attention_panel(sources), "sources": shown, "sources_page": paging,
            "shared": shared_panel(snapshot, manifest, registry, airflow_root),
            "pass_rates": pass_rates_panel(snapshot), "quarantine": quarantine_panel(snapshot),
            "sharing": sharing_panel(snapshot), "alerts": alerts_panel(snapshot, airflow_root)}
