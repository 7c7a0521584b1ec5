"""The operator's page: plain HTML with inline CSS and inline SVG charts, readable inside Airflow's iframe.

Every figure is text too, in a table under its chart, and key figures carry a stable ``data-testid`` (see
``docs/operator-page.md``): counts are plain integers, rates carry their exact value in ``data-value``. Links
inside the page are relative (the page is served under ``/ndc/``); links to Airflow runs open in the top window.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from html import escape
from urllib.parse import urlencode

from .charts import Series, horizontal_bars, line_chart, stacked_bars

WINDOWS = (7, 30, 90)
STATUS_TEXT = {"pass": "pass", "warn": "warn", "error": "error", "never_loaded": "never loaded",
               "missing": "missing", "no_sla": "no SLA"}
UNITS = {"delivery": "Deliveries", "exchange": "Exchanges", "read": "Reads", "request": "Service requests"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:14px;color:#1d1d1d;margin:16px;
background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}tr.group th{background:#e6eef7}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.nw,time{white-space:nowrap}td.run{min-width:11em;font-size:12px;overflow-wrap:anywhere}section{overflow-x:auto}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-weight:600;font-size:12px;white-space:nowrap}
.pass,.success{background:#d7f0df;color:#0b5d23}.warn{background:#fff0c2;color:#6b4d00}
.error,.missing,.failed{background:#fadad7;color:#8a1c12}.never_loaded,.no_sla{background:#e8e8e8;color:#444}
.banner{background:#fadad7;border:1px solid #d9534f;color:#6a140d;padding:10px 12px;border-radius:4px;margin:12px 0}
.notice{background:#fff6d6;border:1px solid #e0c060;padding:6px 10px;border-radius:4px;margin:8px 0}
.muted{color:#666}a{color:#0b5cad}nav a{margin-right:8px}
.failing{background:#fadad7;color:#8a1c12}.late{background:#fff0c2;color:#6b4d00}
.quarantining{background:#e6eef7;color:#1d4f86}form.search{margin:6px 0}form.search input[type=search]{width:24em}
.pager a,.pager span{margin-right:8px}
"""
TABLE_ROWS = 25  # per-dataset tables of the charts show the worst rows; the JSON has them all


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _count(value: int | None, testid: str) -> str:
    shown = "—" if value is None else str(value)
    return f'<td class="n" data-testid="{_e(testid)}" data-value="{_e(value)}">{shown}</td>'


def _rate(value: float | None, testid: str) -> str:
    shown = "—" if value is None else f"{value * 100:.2f} %"
    return f'<td class="n" data-testid="{_e(testid)}" data-value="{_e(value)}">{shown}</td>'


def _time(iso: str | None, testid: str | None = None) -> str:
    tid = f' data-testid="{_e(testid)}"' if testid else ""
    if not iso:
        return f"<td{tid}>—</td>"
    shown = datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    return f'<td><time datetime="{_e(iso)}"{tid}>{shown}</time></td>'


def human(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    hours = seconds / 3600
    if hours < 1:
        return f"{max(0, round(seconds / 60))} min"
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def _badge(status: str | None, testid: str) -> str:
    status = status or "never_loaded"
    return f'<span class="badge {_e(status)}" data-testid="{_e(testid)}">{_e(STATUS_TEXT.get(status, status))}</span>'


def short(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d" if not hours else f"{days * 24 + hours} h"


def _sla(freshness: dict) -> str:
    warn, error = freshness["warn_after_seconds"], freshness["error_after_seconds"]
    if warn is None and error is None:
        return '<td class="nw" title="no thresholds">—</td>'
    return (f'<td class="nw" title="warn after {short(warn)}, error after {short(error)}">{short(warn)} / '
            f"{short(error)}</td>")


def _run_link(url: str | None, run_id: str | None, testid: str) -> str:
    if not url:
        return "<td>—</td>"
    return f'<td class="run"><a href="{_e(url)}" target="_top" data-testid="{_e(testid)}">{_e(run_id)}</a></td>'


def _load_cells(dataset: str, load: dict | None) -> str:
    load = load or {}
    outcome = load.get("outcome")
    cells = [_time(load.get("recorded_at"), f"last-load-at-{dataset}"),
             f'<td><span class="badge {_e(outcome)}" data-testid="last-load-outcome-{_e(dataset)}">'
             f'{_e(outcome or "never")}</span></td>',
             _count(load.get("rows_in"), f"last-load-rows-in-{dataset}"),
             _count(load.get("rows_loaded"), f"last-load-rows-loaded-{dataset}"),
             _count(load.get("rows_quarantined"), f"last-load-rows-quarantined-{dataset}"),
             _run_link(load.get("run_url"), load.get("run_id"), f"last-load-run-{dataset}")]
    return "".join(cells)


def _freshness_cells(dataset: str, freshness: dict) -> str:
    age = freshness["age_seconds"]
    return (f'<td class="nw">{_badge(freshness["status"], f"freshness-{dataset}")} <span class="muted"'
            f' data-testid="freshness-age-{_e(dataset)}" data-value="{_e(age)}">{human(age)}</span></td>'
            f"{_sla(freshness)}")


def _source_group(source: dict) -> str:
    """A header row per source: its owner and schedule."""
    name = source["dataset"].split(".")[0]
    detail = " · ".join(_e(x) for x in (source["owner_agency"], source["schedule"] and f"schedule {source['schedule']}")
                        if x)
    return f'<tr class="group"><th colspan="9">{_e(name)} <span class="muted">{detail}</span></th></tr>'


def _reasons(reasons: list[str], dataset: str) -> str:
    return " ".join(f'<span class="badge {_e(r)}" data-testid="attention-{_e(r)}-{_e(dataset)}">{_e(r)}</span>'
                    for r in reasons)


def attention_section(panel: dict) -> str:
    """What needs an operator, first: failing, then late, then quarantining (most open rows first)."""
    counts = " · ".join(f'<span data-testid="attention-count-{r}">{n}</span> {r}'
                        for r, n in panel["by_reason"].items())
    head = ("<tr><th>Dataset</th><th>Why</th><th>Owner</th><th>Last successful extract (UTC)</th><th>Last load</th>"
            "<th>Open quarantine</th><th>Airflow run</th></tr>")
    rows = []
    for s in panel["datasets"]:
        d, load = s["dataset"], s["last_load"] or {}
        rows.append(f'<tr data-testid="attention-row-{_e(d)}"><td>{_e(d)}</td><td class="nw">'
                    f'{_reasons(s["attention"], d)}</td><td>{_e(s["owner_agency"] or "—")}</td>'
                    f'{_time(s["last_extract_at"])}<td><span class="badge {_e(load.get("outcome"))}">'
                    f'{_e(load.get("outcome") or "never")}</span></td>'
                    f'{_count(s["open_quarantine_rows"], f"attention-quarantine-{d}")}'
                    f'{_run_link(load.get("run_url"), load.get("run_id"), f"attention-run-{d}")}</tr>')
    more = (f'<p class="muted">Showing the first {panel["shown"]} of {panel["total"]}; search the sources below or'
            ' read <a href="api/attention">api/attention</a>.</p>' if panel["total"] > panel["shown"] else "")
    return (f'<section id="attention"><h2>Needs attention (<span data-testid="attention-total">{panel["total"]}'
            f"</span>)</h2><p>{counts}</p><p class=\"muted\">Failing: the last load failed. Late: past the dbt "
            "freshness threshold, or no successful extract for a whole interval of its own schedule (never loaded"
            " included). Quarantining: rows open in quarantine.</p>"
            f"<table>{head}{''.join(rows) or '<tr><td colspan=7>Nothing needs attention.</td></tr>'}</table>{more}"
            "</section>")


def _link(days: int, q: str, page: int, per_page: int) -> str:
    return "?" + urlencode({"days": days, **({"q": q} if q else {}), "page": page, "per_page": per_page})


def _pager(paging: dict, days: int, where: str = "") -> str:
    page, pages, q, per = paging["page"], paging["pages"], paging["q"], paging["per_page"]
    links = []
    if page > 1:
        links.append(f'<a href="{_e(_link(days, q, page - 1, per))}" data-testid="sources-previous{where}">previous'
                     "</a>")
    links.append(f'<span data-testid="sources-page{where}">page {page} of {pages}</span>')
    if page < pages:
        links.append(f'<a href="{_e(_link(days, q, page + 1, per))}" data-testid="sources-next{where}">next</a>')
    return f'<p class="pager">{"".join(links)}</p>'


def sources_section(sources: list[dict], paging: dict | None = None, days: int = 30) -> str:
    paging = paging or {"q": "", "page": 1, "pages": 1, "per_page": len(sources), "matching": len(sources),
                        "total": len(sources), "sources": len({s["dataset"].split(".")[0] for s in sources})}
    head = ("<tr><th>Dataset</th><th>Freshness, age</th><th>SLA</th><th>Last load (UTC)</th><th>Outcome</th>"
            "<th>Rows in</th><th>Loaded</th><th>Quarantined</th><th>Airflow run</th></tr>")
    rows, group = [], None
    for s in sources:
        if s["dataset"].split(".")[0] != group:
            group = s["dataset"].split(".")[0]
            rows.append(_source_group(s))
        rows.append(f'<tr data-testid="source-row-{_e(s["dataset"])}"><td>{_e(s["dataset"])}</td>'
                    f'{_freshness_cells(s["dataset"], s["freshness"])}{_load_cells(s["dataset"], s["last_load"])}</tr>')
    search = (f'<form class="search" method="get" role="search"><input type="hidden" name="days" value="{days}">'
              f'<input type="search" name="q" value="{_e(paging["q"])}" placeholder="dataset, agency or owner"'
              ' aria-label="Search sources" data-testid="sources-search"> <button type="submit">Search</button></form>')
    found = (f'<p data-testid="sources-matching" data-value="{paging["matching"]}">{paging["matching"]} of '
             f'{paging["total"]} landing datasets ({paging["sources"]} sources)'
             f'{" match " + _e(repr(paging["q"])) if paging["q"] else ""}.</p>')
    return ('<section id="sources"><h2>Sources (landing)</h2><p class="muted">Freshness: age of the last load that'
            " brought rows, against the dbt source's thresholds. Last load: the latest extract run.</p>"
            f"{search}{found}{_pager(paging, days)}"
            f"<table>{head}{''.join(rows) or '<tr><td colspan=9>No sources.</td></tr>'}</table>"
            f"{_pager(paging, days, '-bottom') if paging['pages'] > 1 else ''}</section>")


def _built_from(shared: dict) -> str:
    sources = sorted({s.split(".")[0] for s in shared["freshness"]["sla_from"] or ()})
    owners = "; ".join(shared["owner_agencies"])
    return f'<td title="owners: {_e(owners)}">{_e(", ".join(sources) or "—")}</td>'


def shared_section(shared: list[dict]) -> str:
    head = ("<tr><th>Dataset</th><th>Built from</th><th>Freshness, age</th><th>SLA</th><th>Last publish (UTC)</th>"
            "<th>Outcome</th><th>Rows in</th><th>Published</th><th>Quarantined</th><th>Airflow run</th></tr>")
    rows = [f'<tr data-testid="shared-row-{_e(s["dataset"])}"><td>{_e(s["dataset"])}</td>'
            f"{_built_from(s)}{_freshness_cells(s['dataset'], s['freshness'])}"
            f'{_load_cells(s["dataset"], s["last_load"])}</tr>' for s in shared]
    return ('<section id="shared"><h2>Shared datasets</h2><p class="muted">Freshness: age of the last successful'
            " publish, against the strictest thresholds of the sources it is built from. Last load: the latest"
            " publish of the conform DAG.</p>"
            f"<table>{head}{''.join(rows) or '<tr><td colspan=10>No shared datasets.</td></tr>'}</table></section>")


def window_days(since: str, generated_at: str) -> list[date]:
    first, last = date.fromisoformat(since), datetime.fromisoformat(generated_at).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _rate_range(values: list[float]) -> tuple[float, float]:
    lowest = min(values, default=1.0)
    return max(0.0, math.floor(min(lowest, 0.999) * 10) / 10), 1.0


def pass_rate_section(panel: dict, days: list[date]) -> str:
    per_day = {d["day"]: d for d in panel["days"]}
    labels = [d.isoformat() for d in days]
    rows_rate = [per_day.get(d, {}).get("row_pass_rate") for d in labels]
    validations = [per_day.get(d, {}).get("validation_pass_rate") for d in labels]
    low, high = _rate_range([v for v in rows_rate + validations if v is not None])
    chart = line_chart(testid="chart-pass-rate", title="Contract pass rate per day",
                       labels=[d[5:] for d in labels],
                       series=[Series("rows passing", rows_rate), Series("validations passing", validations)],
                       x_title="Day (UTC)", y_title="Pass rate", fmt=lambda v: f"{round(v * 100, 1):g} %",
                       low=low, high=high)
    head = ("<tr><th>Day</th><th>Validations</th><th>Passed</th><th>Failed (rows quarantined)</th><th>Blocked</th>"
            "<th>Rows checked</th><th>Rows failed</th><th>Rows passing</th><th>Validations passing</th></tr>")
    rows = [f"<tr><td>{_e(d['day'])}</td>{_pass_cells(d, d['day'])}</tr>" for d in panel["days"]]
    head2 = head.replace("<th>Day</th>", "<th>Dataset</th><th>Gate</th>")
    worst = sorted(panel["by_dataset"], key=lambda d: (d["row_pass_rate"] if d["row_pass_rate"] is not None else 2,
                                                       d["dataset"]))[:TABLE_ROWS]
    rows2 = [f"<tr><td>{_e(d['dataset'])}</td><td>{_e(d['gate'])}</td>{_pass_cells(d, d['dataset'] + '-' + d['gate'])}"
             "</tr>" for d in sorted(worst, key=lambda d: (d["dataset"], d["gate"]))]
    shown = (f'<p class="muted">The {TABLE_ROWS} with the lowest row pass rate of {len(panel["by_dataset"])};'
             ' all in <a href="api/pass_rates">api/pass_rates</a>.</p>'
             if len(panel["by_dataset"]) > TABLE_ROWS else "")
    return ('<section id="pass-rate"><h2>Contract pass rate</h2>'
            f"{chart}<h3>Per day</h3><table>{head}{''.join(rows) or _none(9)}</table>"
            f"<h3>Per dataset and gate, over the window</h3>{shown}<table>{head2}{''.join(rows2) or _none(10)}</table>"
            "</section>")


def _none(columns: int) -> str:
    return f'<tr><td colspan="{columns}" class="muted">None in this window.</td></tr>'


def _pass_cells(d: dict, key: str) -> str:
    return "".join([_count(d["validations"], f"pass-rate-validations-{key}"),
                    _count(d["passed"], f"pass-rate-passed-{key}"), _count(d["failed"], f"pass-rate-failed-{key}"),
                    _count(d["blocked"], f"pass-rate-blocked-{key}"),
                    _count(d["rows_checked"], f"pass-rate-rows-checked-{key}"),
                    _count(d["rows_failed"], f"pass-rate-rows-failed-{key}"),
                    _rate(d["row_pass_rate"], f"pass-rate-rows-{key}"),
                    _rate(d["validation_pass_rate"], f"pass-rate-validation-rate-{key}")])


def quarantine_section(panel: dict) -> str:
    ranked = sorted(panel["datasets"], key=lambda d: (-d["open_rows"], d["dataset"]))[:TABLE_ROWS]
    chart = horizontal_bars(testid="chart-quarantine", title="Open quarantine per dataset (rows)",
                            items=[(d["dataset"], d["open_rows"]) for d in ranked[:12]], x_title="Rows open")
    head = ("<tr><th>Dataset</th><th>Check</th><th>Rows open</th><th>Not replayed</th><th>Replayed, still failing</th>"
            "<th>Oldest (UTC)</th></tr>")
    rows = []
    for d in sorted(ranked if len(panel["datasets"]) > TABLE_ROWS else panel["datasets"], key=lambda d: d["dataset"]):
        ds = d["dataset"]
        rows.append(f'<tr><td><strong>{_e(ds)}</strong></td><td><em>all checks</em></td>'
                    f'{_count(d["open_rows"], f"quarantine-open-{ds}")}'
                    f'{_count(d["rows_not_replayed"], f"quarantine-not-replayed-{ds}")}'
                    f'{_count(d["rows_still_failing"], f"quarantine-still-failing-{ds}")}'
                    f'{_time(d["oldest_at"], f"quarantine-oldest-{ds}")}</tr>')
        rows += [_check_row(ds, c) for c in d["checks"]]
    total = f'<p>Rows open in quarantine: <strong data-testid="quarantine-total">{panel["total_open"]}</strong></p>'
    if len(panel["datasets"]) > TABLE_ROWS:
        total += (f'<p class="muted">The {TABLE_ROWS} datasets with most rows open of {len(panel["datasets"])};'
                  ' all in <a href="api/quarantine">api/quarantine</a>.</p>')
    return ('<section id="quarantine"><h2>Open quarantine</h2><p class="muted">Counts only: rows that failed a'
            " contract and were not loaded by a replay (a row failing several checks counts once per dataset)."
            f"</p>{total}{chart}<table>{head}{''.join(rows) or '<tr><td colspan=6>Nothing in quarantine.</td></tr>'}"
            "</table></section>")


def _check_row(ds: str, c: dict) -> str:
    key = f"{ds}-{c['check']}"
    return (f"<tr><td>{_e(ds)}</td><td>{_e(c['check'])}</td>{_count(c['open_rows'], 'quarantine-open-' + key)}"
            f"{_count(c['rows_not_replayed'], 'quarantine-not-replayed-' + key)}"
            f"{_count(c['rows_still_failing'], 'quarantine-still-failing-' + key)}"
            f"{_time(c['oldest_at'], 'quarantine-oldest-' + key)}</tr>")


def sharing_section(panel: dict, days: list[date]) -> str:
    labels = [d.isoformat() for d in days]
    agencies = [a["agency"] for a in panel["by_agency"]]
    cells = {(r["day"], r["agency"]): r["transactions"] for r in panel["by_day"]}
    chart = stacked_bars(testid="chart-sharing", title="Sharing transactions per day, by agency",
                         labels=[d[5:] for d in labels],
                         series=[Series(a, [cells.get((d, a), 0) for d in labels]) for a in agencies],
                         x_title="Day (UTC)", y_title="Transactions")
    head = "<tr><th>Agency</th>" + "".join(f"<th>{label}</th>" for label in UNITS.values()) + "<th>Total</th></tr>"
    rows = [f"<tr><td>{_e(a['agency'])}</td>"
            + "".join(_count(a["by_unit"].get(u, 0), "sharing-agency-" + a["agency"] + "-" + u) for u in UNITS)
            + _count(a["transactions"], "sharing-agency-" + a["agency"]) + "</tr>" for a in panel["by_agency"]]
    per_day = [f"<tr><td>{_e(r['day'])}</td><td>{_e(r['agency'])}</td>"
               + _count(r["transactions"], "sharing-" + r["day"] + "-" + r["agency"]) + "</tr>"
               for r in panel["by_day"]]
    total = f'<p>Sharing transactions in the window: <strong data-testid="sharing-total">{panel["total"]}</strong></p>'
    return ('<section id="sharing"><h2>Sharing transactions</h2><p class="muted">Deliveries to agencies, direct'
            " exchanges, consumer reads and answered requests of the sharing service"
            " (ndc_meta.sharing_transactions).</p>"
            f"{total}{chart}<h3>Per agency</h3><table>{head}{''.join(rows) or _none(6)}</table>"
            f"<h3>Per day and agency</h3><table><tr><th>Day</th><th>Agency</th><th>Transactions</th></tr>"
            f"{''.join(per_day) or _none(3)}</table></section>")


def _alert_row(a: dict) -> str:
    key = f"{a['dataset']}-{a['check']}"
    task = f" / {_e(a['task_id'])}" if a["task_id"] else ""
    return (f"<tr><td>{_e(a['dataset'])}</td><td>{_e(a['check'])}</td>{_count(a['failures'], 'alert-failures-' + key)}"
            f"{_time(a['first_failed_at'], 'alert-since-' + key)}{_time(a['last_failed_at'])}"
            f"<td>{_e(a['dag_id'] or '—')}{task}</td><td>{_e(a['owner_agency'] or '—')}</td>"
            f"{_run_link(a['run_url'], a['last_run_id'], 'alert-run-' + key)}</tr>")


def alerts_section(alerts: list[dict]) -> str:
    head = ("<tr><th>Dataset</th><th>Check</th><th>Failures</th><th>Failing since (UTC)</th><th>Last failure (UTC)"
            "</th><th>DAG / task</th><th>Owner</th><th>Last run</th></tr>")
    rows = [_alert_row(a) for a in alerts]
    return (f'<section id="alerts"><h2>Open alerts (<span data-testid="alerts-open">{len(alerts)}</span>)</h2>'
            f"<table>{head}{''.join(rows) or '<tr><td colspan=8>No open alert.</td></tr>'}</table></section>")


def _document(body: str, days: int) -> str:
    nav = " ".join(f'<a href="?days={n}"{" aria-current=page" if n == days else ""}>{n} days</a>' for n in WINDOWS)
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><title>NDC operations</title>'
            f"<style>{CSS}</style></head><body><header><h1>NDC operations</h1><nav>Window: {nav}"
            f'<a href="api/summary?days={days}">JSON</a></nav></header>{body}</body></html>')


def render(summary: dict) -> str:
    days = window_days(summary["since"], summary["generated_at"])
    notices = "".join(f'<div class="notice" role="status">{_e(n)}</div>' for n in summary["notices"])
    generated = datetime.fromisoformat(summary["generated_at"])
    body = (f'<p class="muted">Generated <time datetime="{_e(summary["generated_at"])}" data-testid="generated-at">'
            f'{generated:%Y-%m-%d %H:%M:%S} UTC</time>; charts cover {summary["days"]} days since '
            f'<span data-testid="window-since">{_e(summary["since"])}</span>.</p>{notices}'
            + attention_section(summary["attention"])
            + sources_section(summary["sources"], summary["sources_page"], summary["days"])
            + shared_section(summary["shared"])
            + pass_rate_section(summary["pass_rates"], days) + quarantine_section(summary["quarantine"])
            + sharing_section(summary["sharing"], days) + alerts_section(summary["alerts"]))
    return _document(body, summary["days"])


def render_error(message: str, days: int) -> str:
    return _document(f'<div class="banner" role="alert" data-testid="error-banner"><strong>The warehouse cannot be'
                     f" read.</strong> {_e(message)}</div>", days)
