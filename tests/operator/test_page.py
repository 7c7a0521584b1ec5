"""The operator's page on a real PostgreSQL, mounted in Airflow's own API server app.

A warehouse is seeded by the platform's own writers where that is cheap (real extracts of a simulated population:
ledger, batches, contract results and quarantine; deliveries under applied agreements; ledger appends) and by
plain INSERTs into the real tables otherwise (backdated loads, older contract results, alerts, consumer reads).
The page and its JSON are then fetched through Airflow's API server app (``airflow.api_fastapi.app.create_app``
with this repository's plugins folder, in a subprocess with its own AIRFLOW_HOME), authenticated by a JWT minted by
Airflow's own token signer — and every figure is compared with an independent query of the base tables.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html import escape, unescape
from pathlib import Path
from urllib.parse import unquote

import psycopg
import pytest
from ndc_lab.simulate import population
from psycopg.types.json import Jsonb

from ndc.audit import ledger
from ndc.operator import views
from ndc.operator.summary import summarise
from ndc.tasks import extract_table
from ndc.warehouse import database
from tests.helpers import REPO
from tests.helpers.database import query, scalar

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
CITIZENS_RUN = "manual__2026-01-01T00:00:00+00:00"
SECRET_PIN, SECRET_NAME = "079912345678", "Trần Thị Bí Mật"
DOWN = "postgresql://ops:s3cr3t-pw@127.0.0.1:9/nowhere"  # port 9 (discard): nothing listens
DAYS = 30
AIRFLOW = str(Path(sys.executable).parent / "airflow")
OPS_VIEWS = {"ops_last_loads", "ops_freshness_inputs", "ops_open_quarantine", "ops_open_alerts",
             "ops_sharing_transactions", "contract_pass_rates"}


def _append_at(conn: psycopg.Connection, entry: ledger.LedgerEntry, when: datetime) -> None:
    """A ledger row recorded at ``when`` (the ledger's own writer stamps the current time), chained like append."""
    with conn.transaction():
        conn.execute("lock table ndc_meta.ledger in share row exclusive mode")
        last = conn.execute("select ledger_id, row_hash from ndc_meta.ledger order by ledger_id desc limit 1"
                            ).fetchone()
        ledger_id, prev = (last[0] + 1, last[1]) if last else (1, ledger.GENESIS)
        values = {**entry.__dict__, "ledger_id": ledger_id, "recorded_at": when}
        columns = [*ledger._FIELDS, "prev_hash", "row_hash"]
        params = [Jsonb(values[k]) if k == "details" else values[k] for k in ledger._FIELDS]
        conn.execute(f"insert into ndc_meta.ledger ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))})",
                     [*params, prev, ledger.row_hash(prev, values)])


def _extract(source: str, table: str, rows: int) -> ledger.LedgerEntry:
    return ledger.LedgerEntry(kind="extract", source=source, target=f"landing_{source}.{table}", run_id="scheduled__x",
                              rows_in=rows, rows_loaded=rows, rows_quarantined=0, duration_ms=9, outcome="success",
                              contract_name=f"{source}.{table}", contract_version="1.0.0")


def _seed_loads(conn: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    conn.execute("create schema if not exists landing_taxation")
    for table, days_ago in (("filings", 3), ("payments", 8)):  # past warn_after (2 days), past error_after (7 days)
        conn.execute(f"create table landing_taxation.{table} (_ndc_loaded_at timestamptz)")
        conn.execute(f"insert into landing_taxation.{table} values (%s)", (now - timedelta(days=days_ago),))
    conn.commit()
    _append_at(conn, _extract("taxation", "filings", 40), now - timedelta(days=3))
    _append_at(conn, _extract("taxation", "payments", 50), now - timedelta(days=8))
    _append_at(conn, _extract("taxation", "taxpayers", 60), now - timedelta(days=1))  # its table is gone: missing


def _seed_results(conn: psycopg.Connection) -> None:
    rows = [(2, "pass", 100, 0), (2, "fail", 200, 7), (2, "blocked", 50, 0), (5, "pass", 10, 0), (40, "fail", 99, 9)]
    for days_ago, outcome, checked, failed in rows:
        conn.execute("insert into ndc_meta.contract_results (checked_at, gate, dataset, contract_name,"
                     " contract_version, run_id, rows_checked, rows_failed, duration_ms, outcome)"
                     " values (now() - make_interval(days => %s), 'landing', 'taxation.filings', 'taxation.filings',"
                     " '1.0.0', 'r', %s, %s, 3, %s)",
                     (days_ago, checked, failed, outcome))
    conn.commit()


def _seed_quarantine(conn: psycopg.Connection) -> None:
    conn.execute("insert into quarantine.rows (dataset, record_key, checks, reasons, payload, row_hash, contract_name,"
                 " contract_version, batch_id, run_id) values ('population.citizens', %s, %s, %s, %s, 'secret-row',"
                 " 'population.citizens', '1.0.0', gen_random_uuid(), 'test')",
                 (SECRET_PIN, ["pin_birth_consistency", "full_name_not_blank"], Jsonb({"pin": SECRET_PIN}),
                  Jsonb({"pin": SECRET_PIN, "full_name": SECRET_NAME})))
    # As a replay marks them: three rows loaded (no longer open), two still failing.
    conn.execute("update quarantine.rows set replayed_at = now(), replay_run_id = 'replay', replay_outcome = 'loaded'"
                 " where quarantine_id in (select quarantine_id from quarantine.rows where 'pin_format' = any(checks)"
                 " order by quarantine_id limit 3)")
    conn.execute("update quarantine.rows set replayed_at = now(), replay_run_id = 'replay',"
                 " replay_outcome = 'still_failing' where quarantine_id in (select quarantine_id from quarantine.rows"
                 " where 'cmnd_format' = any(checks) order by quarantine_id limit 2)")
    conn.commit()


def _seed_publishes(conn: psycopg.Connection) -> int:
    publication = conn.execute("insert into ndc_meta.publications (build_schema, models, run_id) values"
                               " ('shared_a', %s, 'conform_ok') returning publication_id",
                               (["citizens", "enterprises"],)).fetchone()[0]
    conn.commit()
    ledger.append(conn, ledger.LedgerEntry(
        kind="publish", source="shared_a", target="shared", run_id="scheduled__2026-01-03T00:00:00+00:00",
        rows_in=370, rows_loaded=370, rows_quarantined=0, duration_ms=20, outcome="success",
        details={"models": {"citizens": 250, "enterprises": 120}, "gate2_rows_checked": 370}))
    ledger.append(conn, ledger.LedgerEntry(
        kind="publish", source="shared_b", target="shared", run_id="manual__2026-01-04T00:00:00+00:00", rows_in=0,
        rows_loaded=0, rows_quarantined=0, duration_ms=20, outcome="failed",
        details={"blocked_by": "row_count_change", "relation": "citizens", "failures": []}))
    return publication


def _seed_alerts(conn: psycopg.Connection) -> None:
    for dataset, check, failures, closed in [("population.citizens", "pin_format", 3, False),
                                             ("taxation.filings", "task_failed", 1, False),
                                             ("population.households", "task_failed", 2, True)]:
        conn.execute("insert into ndc_meta.alerts (dataset, check_name, dag_id, task_id, owner_agency, first_run_id,"
                     " last_run_id, failures, message, first_failed_at, closed_at)"
                     " values (%s, %s, %s, %s, 'Bộ Công an', 'r1', %s, %s, %s, now() - interval '1 day', %s)",
                     (dataset, check, f"extract_{dataset.split('.')[0]}", f"extract_{dataset.split('.')[1]}",
                      CITIZENS_RUN, failures, f"row {SECRET_PIN} failed", datetime.now(UTC) if closed else None))
    conn.commit()


def _seed_sharing(conn: psycopg.Connection, publication: int) -> None:
    from ndc.sharing.agreements import deliver

    database.ensure_meta(conn)
    applied = [("qn", "quang_ngai", ["citizens"]), ("vss", "vss", ["citizens", "enterprises"])]
    for agreement, consumer, shared in applied:
        conn.execute("insert into ndc_meta.applied_agreements (agreement_id, consumer, views, content_sha256,"
                     " starts_on, expires_on) values (%s, %s, %s, 'x', current_date - 10, current_date + 10)",
                     (agreement, consumer, shared))
    conn.execute("insert into ndc_meta.consumer_reads (day, role, agency, view, reads) values"
                 " (current_date - 3, 'qn_reader', 'quang_ngai', 'citizens', 5),"
                 " (current_date - 40, 'qn_reader', 'quang_ngai', 'citizens', 7)")
    conn.commit()
    assert deliver(conn, publication, run_id="scheduled__2026-01-03T00:00:00+00:00") == 2
    ledger.append(conn, ledger.LedgerEntry(
        kind="exchange", source="taxation.filings", target="agency_taxation.filings", run_id="scheduled__e",
        rows_in=10, rows_loaded=10, rows_quarantined=0, duration_ms=5, outcome="success",
        details={"exchange": "filings_to_taxation", "consumer_agency": "taxation", "payload_in_hub": False}))


@pytest.fixture(scope="module")
def world(dbs):
    spec = population.PopulationSpec(citizens=400, seed=11, defect_rate=0.05)
    population.write(dbs.source, population.simulate(spec), spec)
    extract_table("population", "citizens", *EVERYTHING, run_id=CITIZENS_RUN)
    extract_table("population", "households", *EVERYTHING, run_id="scheduled__2026-01-02T00:00:00+00:00")
    with database.connect(dbs.warehouse) as conn:
        _seed_loads(conn)
        _seed_results(conn)
        _seed_quarantine(conn)
        publication = _seed_publishes(conn)
        _seed_alerts(conn)
        _seed_sharing(conn, publication)
    return dbs.warehouse


# --- fetching through Airflow's API server app ------------------------------------------------------------------

FETCH = r"""
import json, os, sys
import jwt
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

app = create_app(apps="core")
token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="operator", role="VIEWER"))
admin = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
forged = jwt.encode({"sub": "operator", "role": "ADMIN", "aud": "apache-airflow"}, "not-the-secret", algorithm="HS512")
out = {}
client = TestClient(app)
for name, path, auth, env in json.loads(sys.argv[2]):
    os.environ.update(env)
    client.cookies.clear()
    headers, cookies = {}, {}
    if auth in ("bearer", "forged", "admin"):
        headers["Authorization"] = "Bearer " + {"bearer": token, "forged": forged, "admin": admin}[auth]
    elif auth == "cookie":
        cookies["_token"] = token
    client.cookies.update(cookies)
    response = client.get(path, headers=headers, follow_redirects=False)
    out[name] = {"status": response.status_code, "text": response.text, "type": response.headers.get("content-type"),
                 "csp": response.headers.get("content-security-policy")}
    for key in env:
        os.environ.pop(key, None)
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""

REQUESTS = [
    ("page", "/ndc/", "bearer", {}),
    ("page_cookie", f"/ndc/?days={DAYS}", "cookie", {}),
    ("summary", "/ndc/api/summary", "bearer", {}),
    ("summary_cookie", "/ndc/api/summary", "cookie", {}),
    ("sharing_7", "/ndc/api/sharing?days=7", "bearer", {}),
    ("unknown_panel", "/ndc/api/nothing", "bearer", {}),
    ("anonymous_page", "/ndc/", "none", {}),
    ("anonymous_summary", "/ndc/api/summary?days=abc", "none", {}),
    ("forged_page", "/ndc/", "forged", {}),
    ("plugins", "/api/v2/plugins", "admin", {}),
    ("down_page", "/ndc/", "bearer", {"NDC_WAREHOUSE_URL": DOWN}),
    ("down_summary", "/ndc/api/summary", "bearer", {"NDC_WAREHOUSE_URL": DOWN}),
]


def airflow_env(tmp: Path) -> dict[str, str]:
    (tmp / "dags").mkdir(exist_ok=True)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(tmp / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp}/airflow.db",
           "AIRFLOW__CORE__AUTH_MANAGER":
               "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32)}
    env.pop(views.OPERATOR_URL_ENV, None)
    return env


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """An AIRFLOW_HOME with a migrated metadata database, shared by the module's fetches."""
    tmp = tmp_path_factory.mktemp("airflow")
    subprocess.run([AIRFLOW, "db", "migrate"], env=airflow_env(tmp), check=True, capture_output=True, timeout=300)
    return tmp


def fetch(home: Path, requests: list, **env: str) -> dict:
    """Each request's answer from Airflow's API server app (one process), with ``env`` added to its environment."""
    out = home / f"fetched-{secrets.token_hex(4)}.json"
    run = subprocess.run([sys.executable, "-c", FETCH, str(out), json.dumps(requests)],
                         env={**airflow_env(home), **env}, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def fetched(world, airflow_home) -> dict:
    return fetch(airflow_home, REQUESTS)


def figures(html: str) -> dict[str, dict]:
    """Every element with a data-testid: its text (up to its first child tag) and attributes."""
    found: dict[str, dict] = {}
    for match in re.finditer(r"<(\w+)((?:\s[\w-]+(?:=\"[^\"]*\")?)*)\s*>([^<]*)", html):
        attrs = {k: unescape(v) for k, v in re.findall(r"([\w-]+)=\"([^\"]*)\"", match.group(2))}
        if "data-testid" in attrs:
            assert attrs["data-testid"] not in found, f"data-testid {attrs['data-testid']} twice"
            found[attrs["data-testid"]] = {"tag": match.group(1), "text": unescape(match.group(3)), **attrs}
    return found


def chart(html: str, testid: str) -> str:
    return re.search(rf'<svg[^>]*data-testid="{re.escape(escape(testid))}".*?</svg>', html, re.S).group(0)


def data_points(html: str, testid: str) -> list[str]:
    """The ``data-point`` of every element of a chart that has one (``series|label|value``), in order."""
    return [unescape(v) for v in re.findall(r'\sdata-point="([^"]*)"', chart(html, testid))]


def marked_tags(html: str) -> set[str]:
    return set(re.findall(r"<(\w+)\s[^>]*\bdata-point=", html))


# --- (a) every route of the app needs Airflow's login -------------------------------------------------------------

def _routes(routes, prefix: str = ""):
    """Every route's path and methods, mounted ones included."""
    for route in routes:
        if hasattr(route, "routes"):  # a Mount
            yield from _routes(route.routes, prefix + route.path)
        else:
            yield prefix + route.path, set(getattr(route, "methods", None) or ())


def test_every_route_refuses_an_unauthenticated_request():
    from fastapi.testclient import TestClient

    from ndc.airflow.operator_page import create_app

    app = create_app()
    client = TestClient(app)
    walked = 0
    for path, methods in _routes(app.routes):
        path = re.sub(r"\{[^}]+\}", "summary", path)
        for method in sorted({"GET", *methods}):
            for suffix in ("", "?days=7", "?days=not-a-number"):
                response = client.request(method, path + suffix)
                assert response.status_code == 401, (method, path + suffix, response.status_code)
                walked += 1
    assert walked >= 9
    paths = {path for path, _ in _routes(app.routes)}
    assert {"/", "/api/summary", "/api/{panel}"} <= paths
    for docs in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):  # not served at all
        assert docs not in paths
        assert client.get(docs).status_code in (401, 404)


def test_through_airflow_an_unauthenticated_or_forged_request_gets_nothing(fetched):
    assert fetched["anonymous_page"]["status"] == 401
    assert fetched["anonymous_summary"]["status"] == 401
    assert fetched["forged_page"]["status"] in (401, 403)
    for name in ("anonymous_page", "anonymous_summary", "forged_page"):
        assert "population.citizens" not in fetched[name]["text"]


# --- (b) the figures equal independent queries ---------------------------------------------------------------------

def test_page_and_json_answer_with_a_real_airflow_login(fetched):
    for name in ("page", "page_cookie"):
        assert fetched[name]["status"] == 200, fetched[name]["text"][-1500:]
        assert fetched[name]["type"].startswith("text/html")
        assert "frame-ancestors 'self'" in fetched[name]["csp"]
    for name in ("summary", "summary_cookie", "sharing_7"):
        assert fetched[name]["status"] == 200 and fetched[name]["type"] == "application/json"
    assert fetched["unknown_panel"]["status"] == 404


def test_last_loads_equal_the_ledger(world, fetched):
    summary, ids = json.loads(fetched["summary"]["text"]), figures(fetched["page"]["text"])
    latest = query(world, "select distinct on (target) target, rows_in, rows_loaded, rows_quarantined, outcome,"
                          " run_id, source from ndc_meta.ledger where kind = 'extract' order by target, ledger_id desc")
    assert len(latest) == 5
    by_dataset = {s["dataset"]: s for s in summary["sources"]}
    for target, rows_in, rows_loaded, rows_quarantined, outcome, run_id, source in latest:
        dataset = target.removeprefix("landing_")
        load = by_dataset[dataset]["last_load"]
        assert (load["rows_in"], load["rows_loaded"], load["rows_quarantined"], load["outcome"], load["run_id"]) == (
            rows_in, rows_loaded, rows_quarantined, outcome, run_id)
        assert ids[f"last-load-rows-in-{dataset}"]["text"] == str(rows_in)
        assert ids[f"last-load-rows-loaded-{dataset}"]["text"] == str(rows_loaded)
        assert ids[f"last-load-rows-quarantined-{dataset}"]["text"] == str(rows_quarantined)
        assert ids[f"last-load-outcome-{dataset}"]["text"] == outcome
        link = ids[f"last-load-run-{dataset}"]
        assert link["href"] == f"/dags/extract_{source}/runs/{run_id}" == load["run_url"]
        assert link["target"] == "_top" and link["text"] == run_id
    citizens = scalar(world, "select rows_loaded from ndc_meta.ledger where target = 'landing_population.citizens'"
                             " order by ledger_id desc limit 1")
    assert citizens > 0 and ids["last-load-rows-loaded-population.citizens"]["text"] == str(citizens)
    assert scalar(world, "select count(*) from landing_population.citizens") == citizens
    # A registered table never loaded has no last load.
    assert by_dataset["education.schools"]["last_load"] is None
    assert ids["last-load-rows-loaded-education.schools"]["text"] == "—"


def test_freshness_against_the_dbt_sources_thresholds(world, fetched):
    from ndc.conform import dbt, freshness

    summary, ids = json.loads(fetched["summary"]["text"]), figures(fetched["page"]["text"])
    status = {s["dataset"]: s["freshness"]["status"] for s in summary["sources"]}
    assert {d: status[d] for d in ("population.citizens", "population.households", "taxation.filings",
                                   "taxation.payments", "taxation.taxpayers", "education.schools")} == {
        "population.citizens": "pass", "population.households": "pass", "taxation.filings": "warn",
        "taxation.payments": "error", "taxation.taxpayers": "missing", "education.schools": "never_loaded"}
    for dataset, expected in status.items():
        assert ids[f"freshness-{dataset}"]["text"] == expected.replace("_", " ").replace("no sla", "no SLA")
    # The thresholds are the dbt sources' (the conform gate's reading of the manifest), and where landing holds
    # what the ledger says was loaded, the page's status is the gate's (never loaded: the gate sees no table yet).
    with psycopg.connect(world) as conn:
        gate = {f"{r.source}.{r.table}": r for r in freshness.check(conn, dbt.manifest_file())}
    for dataset, page_status in status.items():
        if page_status != "never_loaded":
            assert gate[dataset].status == page_status, dataset
    filings = next(s for s in summary["sources"] if s["dataset"] == "taxation.filings")["freshness"]
    assert filings["warn_after_seconds"] == gate["taxation.filings"].warn_after.total_seconds()
    assert filings["error_after_seconds"] == gate["taxation.filings"].error_after.total_seconds()
    assert 3 * 86400 - 600 < filings["age_seconds"] < 3 * 86400 + 600


def test_shared_datasets_show_the_last_publish_and_its_freshness(world, fetched):
    summary, ids = json.loads(fetched["summary"]["text"]), figures(fetched["page"]["text"])
    shared = {s["dataset"]: s for s in summary["shared"]}
    outcome, run_id = query(world, "select outcome, run_id from ndc_meta.ledger where kind = 'publish'"
                                   " order by ledger_id desc limit 1")[0]
    published = scalar(world, "select (details->'models'->>'citizens')::bigint from ndc_meta.ledger where kind ="
                              " 'publish' and outcome = 'success' order by ledger_id desc limit 1")
    citizens = shared["shared.citizens"]
    assert (citizens["last_load"]["outcome"], citizens["last_load"]["run_id"]) == (outcome, run_id) == (
        "failed", "manual__2026-01-04T00:00:00+00:00")
    assert ids["last-load-outcome-shared.citizens"]["text"] == "failed"
    assert ids["last-load-rows-loaded-shared.citizens"]["text"] == "0"
    assert ids["last-load-run-shared.citizens"]["href"] == f"/dags/conform/runs/{run_id}"
    assert published == 250
    assert citizens["freshness"]["status"] == "pass" and ids["freshness-shared.citizens"]["text"] == "pass"
    assert citizens["freshness"]["warn_after_seconds"] == 2 * 86400
    assert "population.citizens" in citizens["freshness"]["sla_from"]
    assert shared["shared.province_statistics"]["freshness"]["status"] == "never_loaded"


def test_contract_pass_rates_per_day(world, fetched):
    summary, ids = json.loads(fetched["summary"]["text"]), figures(fetched["page"]["text"])
    expected = query(world, "select (date_trunc('day', checked_at))::date::text, count(*), count(*) filter (where"
                            " outcome = 'pass'), sum(rows_checked)::bigint, sum(rows_failed)::bigint"
                            " from ndc_meta.contract_results"
                            " where checked_at >= current_date - %s group by 1 order by 1", (DAYS - 1,))
    assert len(expected) == 3  # today's extracts, two and five days ago; forty days ago is outside the window
    got = [(d["day"], d["validations"], d["passed"], d["rows_checked"], d["rows_failed"])
           for d in summary["pass_rates"]["days"]]
    assert got == [tuple(r) for r in expected]
    for day, validations, passed, checked, failed in expected:
        assert ids[f"pass-rate-validations-{day}"]["text"] == str(validations)
        assert ids[f"pass-rate-passed-{day}"]["text"] == str(passed)
        assert ids[f"pass-rate-rows-checked-{day}"]["text"] == str(checked)
        assert float(ids[f"pass-rate-rows-{day}"]["data-value"]) == pytest.approx(1 - failed / checked, abs=1e-6)
        assert ids[f"pass-rate-rows-{day}"]["text"] == f"{(1 - failed / checked) * 100:.2f} %"
    assert ids["chart-pass-rate"]["tag"] == "svg"
    # One dot per day and rate that exists (rows passing needs rows checked), computed from the base table.
    dots = [("validations passing", day[5:], passed / validations) for day, validations, passed, _, _ in expected]
    dots += [("rows passing", day[5:], 1 - failed / checked) for day, _, _, checked, failed in expected if checked]
    drawn = [p.rsplit("|", 2) for p in data_points(fetched["page"]["text"], "chart-pass-rate")]
    assert len(drawn) == len(dots) >= 4
    assert sorted((series, label) for series, label, _ in drawn) == sorted((series, label) for series, label, _ in dots)
    values = {(series, label): float(value) for series, label, value in drawn}
    for series, label, value in dots:
        assert values[(series, label)] == pytest.approx(value, abs=1e-4), (series, label)


def test_open_quarantine_is_counted_never_shown(world, fetched):
    summary, html = json.loads(fetched["summary"]["text"]), fetched["page"]["text"]
    ids = figures(html)
    open_rows = dict(query(world, "select dataset, count(*) from quarantine.rows where replay_outcome is distinct from"
                                  " 'loaded' group by 1"))
    per_check = query(world, "select dataset, c, count(*), count(*) filter (where replayed_at is null) from"
                             " quarantine.rows, unnest(checks) c where replay_outcome is distinct from 'loaded'"
                             " group by 1, 2")
    assert summary["quarantine"]["total_open"] == sum(open_rows.values())
    assert ids["quarantine-total"]["text"] == str(sum(open_rows.values()))
    for dataset, count in open_rows.items():
        assert ids[f"quarantine-open-{dataset}"]["text"] == str(count)
    for dataset, check, count, not_replayed in per_check:
        assert ids[f"quarantine-open-{dataset}-{check}"]["text"] == str(count)
        assert ids[f"quarantine-not-replayed-{dataset}-{check}"]["text"] == str(not_replayed)
    pin_format = scalar(world, "select count(*) from quarantine.rows where 'pin_format' = any(checks)")
    assert ids["quarantine-open-population.citizens-pin_format"]["text"] == str(pin_format - 3)  # 3 were replayed
    assert ids["quarantine-still-failing-population.citizens-cmnd_format"]["text"] == "2"
    assert ids["chart-quarantine"]["tag"] == "svg"
    # One bar per dataset with open rows (at most twelve, most first), as the base table counts them.
    ranked = sorted(open_rows.items(), key=lambda item: (-item[1], item[0]))[:12]
    bars = data_points(html, "chart-quarantine")
    assert len(bars) == len([n for _, n in ranked if n]) >= 2
    assert bars == [f"Rows open|{dataset}|{count}" for dataset, count in ranked]
    # No payload, key or name of a quarantined row (personal data) reaches the page, the JSON or the alerts panel.
    secrets_ = {SECRET_PIN, SECRET_NAME, *(r[0] for r in query(
        world, "select distinct v from quarantine.rows, jsonb_each_text(payload) e(k, v)"
               " where (k = 'pin' and v ~ '^[0-9]{12}$') or (k = 'full_name' and length(v) >= 8)"))}
    secrets_ |= {r[0] for r in query(world, "select record_key from quarantine.rows where record_key ~ '^[0-9]{12}$'")}
    assert len(secrets_) > 20
    for name in ("page", "page_cookie", "summary", "summary_cookie"):
        leaked = sorted(s for s in secrets_ if s in fetched[name]["text"])
        assert leaked == [], f"{name} shows quarantined values {leaked[:5]}"


def test_sharing_transactions_per_day_and_agency(world, fetched):
    summary, ids = json.loads(fetched["summary"]["text"]), figures(fetched["page"]["text"])
    # Independently: deliveries and exchange batches from the ledger (each one transaction, whatever its views),
    # reads from consumer_reads.
    ledger_rows = query(world, "select coalesce(details->>'consumer', details->>'consumer_agency'), 1"
                               " from ndc_meta.ledger where kind in ('delivery', 'exchange') and outcome = 'success'")
    expected: dict[str, int] = {}
    for agency, views_delivered in ledger_rows:
        expected[agency] = expected.get(agency, 0) + views_delivered
    for agency, reads in query(world, "select agency, sum(reads)::bigint from ndc_meta.consumer_reads"
                                      " where day >= current_date - %s group by 1", (DAYS - 1,)):
        expected[agency] = expected.get(agency, 0) + reads
    assert expected == {"quang_ngai": 6, "vss": 1, "taxation": 1}  # vss: one delivery of two views
    assert {a["agency"]: a["transactions"] for a in summary["sharing"]["by_agency"]} == expected
    assert summary["sharing"]["total"] == 8 and ids["sharing-total"]["text"] == "8"
    for agency, count in expected.items():
        assert ids[f"sharing-agency-{agency}"]["text"] == str(count)
    per_day = query(world, "select day::text, agency, sum(n)::bigint from (select (recorded_at at time zone 'UTC')"
                           "::date as day, coalesce(details->>'consumer', details->>'consumer_agency') as agency,"
                           " 1 as n from ndc_meta.ledger where kind in ('delivery', 'exchange') and outcome ="
                           " 'success' union all select day, agency, reads from ndc_meta.consumer_reads) t"
                           " where day >= current_date - %s group by 1, 2 order by 1, 2", (DAYS - 1,))
    assert [(r["day"], r["agency"], r["transactions"]) for r in summary["sharing"]["by_day"]] == [tuple(r) for r in
                                                                                                 per_day]
    for day, agency, count in per_day:
        assert ids[f"sharing-{day}-{agency}"]["text"] == str(count)
    assert ids["sharing-agency-quang_ngai-read"]["text"] == "5"
    assert ids["chart-sharing"]["tag"] == "svg"
    # One bar segment per day and agency with transactions, from the base tables.
    segments = data_points(fetched["page"]["text"], "chart-sharing")
    assert len(segments) == len([n for _, _, n in per_day if n]) >= 3
    assert sorted(segments) == sorted(f"{agency}|{day[5:]}|{count}" for day, agency, count in per_day if count)
    # Three days ago is inside a 7-day window too; forty days ago is in neither.
    assert json.loads(fetched["sharing_7"]["text"])["sharing"]["total"] == 8


def test_open_alerts_without_their_message(world, fetched):
    summary, ids = json.loads(fetched["summary"]["text"]), figures(fetched["page"]["text"])
    expected = query(world, "select dataset, check_name, failures from ndc_meta.alerts where closed_at is null")
    assert sorted((a["dataset"], a["check"], a["failures"]) for a in summary["alerts"]) == sorted(
        tuple(r) for r in expected)
    assert ids["alerts-open"]["text"] == str(len(expected)) == "2"
    assert ids["alert-failures-population.citizens-pin_format"]["text"] == "3"
    assert ids["alert-run-population.citizens-pin_format"]["href"] == f"/dags/extract_population/runs/{CITIZENS_RUN}"
    assert "message" not in summary["alerts"][0]


def test_charts_are_self_contained_svg_with_titles(fetched):
    html = fetched["page"]["text"]
    for testid in ("chart-pass-rate", "chart-sharing", "chart-quarantine"):
        svg = re.search(rf'<svg[^>]*data-testid="{testid}".*?</svg>', html, re.S).group(0)
        assert re.search(r"<title[^>]*>[^<]+</title>", svg) and 'role="img"' in svg
        assert "Day (UTC)" in svg or "Rows open" in svg
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    # Only the charts' data points are marked: no legend swatch, axis, grid line or label, nothing outside a chart.
    charted = sum(len(data_points(html, t)) for t in ("chart-pass-rate", "chart-sharing", "chart-quarantine"))
    assert html.count("data-point=") == charted > 0
    assert marked_tags(html) == {"rect", "circle"}
    assert marked_tags(chart(html, "chart-pass-rate")) == {"circle"}
    assert "https://" not in html
    assert 'href="api/summary?days=30"' in html  # relative: works under /ndc/ in the iframe


def test_an_unreachable_warehouse_is_named_without_its_password(fetched):
    page, api = fetched["down_page"], fetched["down_summary"]
    assert page["status"] == 503 and api["status"] == 503
    assert 'data-testid="error-banner"' in page["text"] and "127.0.0.1:9" in page["text"]
    assert "127.0.0.1:9" in json.loads(api["text"])["error"]
    for text in (page["text"], api["text"]):
        assert "s3cr3t-pw" not in text


# --- (c) the reader's role reads the aggregates and nothing else ---------------------------------------------------

def test_the_operator_role_reads_only_the_aggregate_views(world):
    grants = query(world, "select table_schema || '.' || table_name, privilege_type from"
                          " information_schema.role_table_grants where grantee = 'ndc_operator'"
                          " and table_catalog = current_database()")
    assert sorted(grants) == sorted((f"ndc_meta.{v}", "SELECT") for v in OPS_VIEWS)
    with psycopg.connect(world, autocommit=True) as conn:
        conn.execute("set role ndc_operator")
        for view in OPS_VIEWS:
            conn.execute(f"select * from ndc_meta.{view} limit 1").fetchall()
        for table in ("quarantine.rows", "quarantine.overview", "landing_population.citizens",
                      "landing_population.citizens_history", "ndc_meta.ledger", "ndc_meta.alerts",
                      "ndc_meta.batches", "ndc_meta.consumer_reads", "ndc_meta.sharing_transactions",
                      "ndc_meta.agreement_keys"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"select 1 from {table} limit 1")


def _relations(plan: dict) -> set[str]:
    found = {f"{plan.get('Schema')}.{plan['Relation Name']}"} if "Relation Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= _relations(child)
    return found


def test_the_page_reads_rollups_not_the_ledger(world):
    """The page's cost does not grow with the ledger's length (issue 19): no view it reads scans the ledger or the
    contract results; each ledger row updated small rollups as it was written (revision 0004)."""
    read = set()
    with psycopg.connect(world, autocommit=True) as conn:
        for statement in views.QUERIES.values():
            plan = conn.execute(f"explain (format json, verbose) {statement}", {"since": "2026-01-01"}).fetchone()[0]
            read |= _relations(plan[0]["Plan"])
    assert {"ndc_meta.dataset_loads", "ndc_meta.landing_freshness", "ndc_meta.contract_results_daily"} <= read
    assert not read & {"ndc_meta.ledger", "ndc_meta.contract_results"}, read
    # the rollups hold what the ledger says (the page's figures are checked against the ledger above)
    rolled = dict(query(world, "select dataset, loads from ndc_meta.dataset_loads where dataset not like 'shared%%'"))
    counted = dict(query(world, "select regexp_replace(target, '^landing_', ''), count(*) from ndc_meta.ledger"
                                " where kind = 'extract' group by 1"))
    assert rolled == counted and rolled


def test_the_page_session_is_read_only_as_the_operator_role(world):
    with views.reader() as conn:
        assert conn.execute("select current_user, current_setting('transaction_read_only'),"
                            " current_setting('statement_timeout')").fetchone() == ("ndc_operator", "on", "10s")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("create temporary table scratch (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select payload from quarantine.rows")


def _timeless(summary: dict) -> dict:
    """The summary without what moves with the clock (when it was read, and so the ages)."""
    for dataset in summary["sources"] + summary["shared"]:
        dataset["freshness"]["age_seconds"] = None
    return {**summary, "generated_at": None}


def test_an_operator_login_sees_the_same_figures(world, monkeypatch):
    login = f"ndc_test_operator_{world.rsplit('_', 1)[-1]}"
    with psycopg.connect(world, autocommit=True) as conn:
        conn.execute(f'create role "{login}" login in role ndc_operator')
    try:
        with views.reader() as conn:
            as_owner = summarise(views.read(conn, DAYS), DAYS)
        monkeypatch.setenv(views.OPERATOR_URL_ENV, world.replace("postgres@", f"{login}@", 1))
        with views.reader() as conn:
            assert conn.execute("select session_user, current_user").fetchone() == (login, "ndc_operator")
            as_login = summarise(views.read(conn, DAYS), DAYS)
        assert _timeless(as_login) == _timeless(as_owner)
    finally:
        with psycopg.connect(world, autocommit=True) as conn:
            conn.execute(f'drop role if exists "{login}"')


def test_views_exist_on_a_fresh_warehouse_before_any_agreement(pg_server):
    from ndc.warehouse.connections import with_database

    url = with_database(pg_server, f"ndc_test_ops_{secrets.token_hex(4)}")
    database.ensure_database(url)
    try:
        with database.connect(url) as conn:
            database.ensure_meta(conn)
            assert conn.execute("select count(*) from ndc_meta.applied_agreements").fetchone()[0] == 0
        with views.reader(url) as conn:
            summary = summarise(views.read(conn, DAYS), DAYS)
        assert summary["sharing"] == {"total": 0, "by_agency": [], "by_day": []}
        assert summary["quarantine"] == {"total_open": 0, "datasets": []}
        assert summary["alerts"] == [] and summary["pass_rates"]["days"] == []
        assert {s["freshness"]["status"] for s in summary["sources"]} == {"never_loaded"}
    finally:
        database.drop_database(url)


# --- (d) the Airflow plugin registers the app and the view ---------------------------------------------------------

def test_plugin_registers_the_app_and_the_external_view():
    from fastapi import FastAPI

    spec = importlib.util.spec_from_file_location("ndc_plugin", REPO / "plugins" / "ndc_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.NdcPlugin
    assert plugin.name == "ndc"
    [app] = plugin.fastapi_apps
    assert app["url_prefix"] == "/ndc" and app["name"]
    assert isinstance(app["app"], module.OperatorApp) and isinstance(app["app"].app, FastAPI)
    [view] = plugin.external_views
    assert view == {"name": "NDC operations", "href": "ndc/", "url_route": "ndc_operations", "category": "browse"}


def test_loading_the_plugin_does_not_build_the_page():
    """Task processes load every plugin: the page's app (FastAPI, Airflow's API security) waits for a request."""
    probe = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('ndc_plugin', sys.argv[1]);"
             " module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module);"
             " print(sorted(m for m in ('ndc.operator.app', 'ndc.airflow.operator_page', 'fastapi')"
             " if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe, str(REPO / "plugins" / "ndc_plugin.py")],
                         capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr[-2000:]


def test_airflow_lists_the_plugin(world, fetched, tmp_path):
    env = airflow_env(tmp_path)
    run = subprocess.run([AIRFLOW, "plugins", "--output", "json"], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    listed = {p["name"]: p for p in json.loads(run.stdout[run.stdout.index("["):])}
    assert listed["ndc"]["fastapi_apps"][0]["url_prefix"] == "/ndc"
    assert listed["ndc"]["external_views"][0]["href"] == "ndc/"
    # The API server that mounted it lists it to the UI too.
    plugins = json.loads(fetched["plugins"]["text"])["plugins"]
    ndc = next(p for p in plugins if p["name"] == "ndc")
    assert ndc["external_views"][0]["url_route"] == "ndc_operations"


def test_window_since_is_the_first_day_of_the_window(fetched):
    summary = json.loads(fetched["summary"]["text"])
    generated = datetime.fromisoformat(summary["generated_at"]).date()
    assert date.fromisoformat(summary["since"]) == generated - timedelta(days=DAYS - 1)


# --- (e) what the warehouse holds is shown as text, never as markup ------------------------------------------------

HOSTILE = {
    "agency": '<script>alert("agency")</script>&\'"',
    "run": 'manual__2026-01-05T00:00:00+00:00"><script>alert(\'run\')</script>&x=\'1',
    "source": 'x"><script>alert("source")</script>',
    "dataset": "population.<img src=x onerror=alert('dataset')>\"&",
    "check": '<script>alert("check")</script>&\'"',
    "owner": '"><script>alert(\'owner\')</script>&',
    "dag": "extract_<script>alert('dag')</script>",
    "task": "<b onmouseover=alert('task')>t</b>\"",
}


def _seed_hostile(conn: psycopg.Connection) -> None:
    """Markup and script in every text the page shows from the warehouse, written into the tables it reads."""
    now, run = datetime.now(UTC), HOSTILE["run"]
    for source, table in (("population", "citizens"), (HOSTILE["source"], "t")):
        _append_at(conn, ledger.LedgerEntry(
            kind="extract", source=source, target=f"landing_{source}.{table}", run_id=run, rows_in=3, rows_loaded=3,
            rows_quarantined=0, duration_ms=9, outcome="success", contract_name=f"{source}.{table}",
            contract_version="1.0.0"), now)
    _append_at(conn, ledger.LedgerEntry(
        kind="delivery", source="shared", target="agency_x", run_id=run, rows_in=0, rows_loaded=0, rows_quarantined=0,
        duration_ms=0, outcome="success",
        details={"agreement": "x", "consumer": HOSTILE["agency"], "views": ["citizens"], "publication_id": 1}), now)
    conn.execute("insert into quarantine.rows (dataset, record_key, checks, reasons, payload, row_hash, contract_name,"
                 " contract_version, batch_id, run_id) values (%s, 'k', %s, '{}', '{}', 'h', 'c', '1.0.0',"
                 " gen_random_uuid(), %s)", (HOSTILE["dataset"], [HOSTILE["check"]], run))
    conn.execute("insert into ndc_meta.contract_results (gate, dataset, contract_name, contract_version, run_id,"
                 " rows_checked, rows_failed, duration_ms, outcome) values ('landing', %s, 'c', '1.0.0', %s, 10, 1, 3,"
                 " 'fail')", (HOSTILE["dataset"], run))
    conn.execute("insert into ndc_meta.alerts (dataset, check_name, dag_id, task_id, owner_agency, first_run_id,"
                 " last_run_id, message) values (%s, %s, %s, %s, %s, %s, %s, 'm')",
                 (HOSTILE["dataset"], HOSTILE["check"], HOSTILE["dag"], HOSTILE["task"], HOSTILE["owner"], run, run))
    conn.commit()


@pytest.fixture(scope="module")
def hostile(pg_server) -> Iterator[str]:
    """A warehouse of its own (the other tests' figures stay exact) holding only hostile text."""
    from ndc.warehouse.connections import with_database

    url = with_database(pg_server, f"ndc_test_xss_{secrets.token_hex(4)}")
    database.ensure_database(url)
    try:
        with database.connect(url) as conn:
            database.ensure_meta(conn)
            _seed_hostile(conn)
        yield url
    finally:
        database.drop_database(url)


@pytest.fixture(scope="module")
def hostile_page(hostile, airflow_home) -> str:
    answer = fetch(airflow_home, [("page", "/ndc/", "bearer", {})], NDC_WAREHOUSE_URL=hostile)["page"]
    assert answer["status"] == 200, answer["text"][:500]
    return answer["text"]


def _raw_href(html: str, testid: str) -> str:
    """The link's href exactly as written in the page (before any unescaping)."""
    return re.search(rf'<a href="([^"]*)"[^>]*data-testid="{re.escape(escape(testid))}"', html).group(1)


def test_hostile_text_from_the_warehouse_is_escaped(hostile, hostile_page):
    html = hostile_page
    assert "<script" not in html.lower() and "<img" not in html.lower() and "<b " not in html.lower()
    for name, value in HOSTILE.items():
        assert value not in html, f"{name} is written unescaped"
        assert escape(value, quote=True) in html, f"{name} is not shown (escaped) as text"
    # Text where a reader sees it: the agency of a delivery, the run of an extract, an alert's owner, dataset, check.
    assert f"<td>{escape(HOSTILE['agency'])}</td>" in html
    assert f">{escape(HOSTILE['run'])}</a>" in html
    for key in ("owner", "dataset", "check"):
        assert f"<td>{escape(HOSTILE[key])}</td>" in html, key
    assert f"<td>{escape(HOSTILE['dag'])} / {escape(HOSTILE['task'])}</td>" in html
    ids = figures(html)
    assert ids[f"sharing-agency-{HOSTILE['agency']}"]["text"] == "1"
    assert ids["last-load-run-population.citizens"]["text"] == HOSTILE["run"]


def test_hostile_run_ids_are_quoted_in_their_links(hostile_page):
    html, ids = hostile_page, figures(hostile_page)
    source_dataset = f"{HOSTILE['source']}.t"
    links = {"last-load-run-population.citizens": ("extract_population", HOSTILE["run"]),
             f"last-load-run-{source_dataset}": (f"extract_{HOSTILE['source']}", HOSTILE["run"]),
             f"alert-run-{HOSTILE['dataset']}-{HOSTILE['check']}": (HOSTILE["dag"], HOSTILE["run"])}
    for testid, (dag_id, run_id) in links.items():
        raw = _raw_href(html, testid)
        assert re.fullmatch(r"/dags/[\w.~%-]+/runs/[\w.~%:+@=,-]+", raw), raw  # no quote, <, >, & or space in it
        _, dags, dag, runs, run = raw.split("/")
        assert (dags, runs, unquote(dag), unquote(run)) == ("dags", "runs", dag_id, run_id)
        assert ids[testid]["href"] == raw and ids[testid]["text"] == run_id


def test_hostile_names_in_the_charts_are_escaped(hostile, hostile_page):
    html = hostile_page
    day = scalar(hostile, "select (recorded_at at time zone 'UTC')::date::text from ndc_meta.ledger"
                          " where kind = 'delivery'")
    assert data_points(html, "chart-sharing") == [f"{HOSTILE['agency']}|{day[5:]}|1"]
    assert data_points(html, "chart-quarantine") == [f"Rows open|{HOSTILE['dataset']}|1"]
    assert len(data_points(html, "chart-pass-rate")) == 2  # today's rows passing and validations passing
    for testid in ("chart-sharing", "chart-quarantine"):
        svg = chart(html, testid)
        assert "<script" not in svg and "<img" not in svg
        for value in (HOSTILE["agency"], HOSTILE["dataset"]):
            assert value not in svg
