"""The simulated Vietnam Social Security source: determinism, gate acceptance against the manifest, the backend
written to a real PostgreSQL, and the REST API served from it by a real server (no mocks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import polars as pl
import psycopg
import pytest
from ndc_lab.simulate import insurance
from ndc_lab.simulate.common import SimulatedSource, SourceSpec
from ndc_lab.simulate.insurance_api import start_in_thread
from polars.testing import assert_frame_equal

from ndc.contracts import get_contract
from ndc.contracts.validation import validate
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database

TOKEN = "test-token-" + uuid.uuid4().hex[:8]
TABLES = ("insured_people", "employers", "contributions")
GATE_SPEC = SourceSpec(citizens=20_000, seed=11, defect_rate=0.002)
API_SPEC = SourceSpec(citizens=3_000, seed=5, defect_rate=0.005)


@pytest.fixture(scope="module")
def simulated() -> SimulatedSource:
    return insurance.simulate(GATE_SPEC)


def test_simulation_is_deterministic() -> None:
    spec = SourceSpec(citizens=2_000, seed=3, defect_rate=0.005)
    first, second = insurance.simulate(spec), insurance.simulate(spec)
    for table in TABLES:
        assert_frame_equal(first.tables[table], second.tables[table])
    assert_frame_equal(first.manifest, second.manifest)
    assert_frame_equal(first.crosswalks["insurance_code_to_pin"], second.crosswalks["insurance_code_to_pin"])
    other = insurance.simulate(SourceSpec(citizens=2_000, seed=4, defect_rate=0.005))
    assert not first.tables["insured_people"].equals(other.tables["insured_people"])


def _manifest(sim, table: str, outcome: str) -> pl.DataFrame:
    return sim.manifest.filter((pl.col("table_name") == table) & (pl.col("expected_outcome") == outcome))


@pytest.mark.parametrize("table", TABLES)
def test_gate_rejects_exactly_the_manifest(simulated, table: str) -> None:
    frame = simulated.tables[table]
    key = insurance.PRIMARY_KEYS[table]
    result = validate(frame, get_contract(f"insurance.{table}"))
    quarantined = _manifest(simulated, table, "quarantined")
    assert quarantined.height > 0
    rejected = dict(zip(result.rejected[key].cast(pl.String).to_list(), result.rejected["_checks"].to_list(),
                        strict=True))
    assert set(rejected) == set(quarantined["record_key"].to_list())
    for record_key, check in quarantined.select("record_key", "expected_check").iter_rows():
        assert rejected[record_key] == [check], (record_key, rejected[record_key])
    assert result.passed.height + result.rejected.height == frame.height
    assert result.repaired == _manifest(simulated, table, "repaired").height
    passed = set(result.passed[key].cast(pl.String).to_list())
    assert set(_manifest(simulated, table, "exception")["record_key"].to_list()) <= passed
    superseded = _manifest(simulated, table, "superseded")
    assert set(superseded["record_key"].to_list()) <= passed


def test_every_defect_kind_is_present(simulated) -> None:
    kinds = set(simulated.manifest.select("table_name", "kind").unique().iter_rows())
    assert {("insured_people", k) for k in ("insurance_code_format", "pin_format", "future_birth_date",
                                            "unknown_or_retired_province", "blank_name", "duplicate_key",
                                            "nfd_text")} <= kinds
    assert {("contributions", k) for k in ("future_contribution_month", "non_positive_amount",
                                           "orphan_insurance_code")} <= kinds


def test_duplicates_share_a_utc_day_and_the_older_is_the_manifest_version(simulated) -> None:
    people = simulated.tables["insured_people"]
    duplicates = _manifest(simulated, "insured_people", "superseded")
    versions = people.filter(pl.col("insurance_code").is_in(duplicates["record_key"].implode()))
    spans = versions.group_by("insurance_code").agg(pl.len(), pl.col("updated_at").min().alias("older"),
                                                    pl.col("updated_at").max().alias("newer"))
    assert spans["len"].to_list() == [2] * duplicates.height
    assert (spans["older"] < spans["newer"]).all()
    assert (spans["older"].dt.date() == spans["newer"].dt.date()).all()
    joined = spans.join(duplicates, left_on="insurance_code", right_on="record_key")
    assert (joined["older"] == joined["row_version"]).all()


def test_pins_follow_the_august_2025_switch_and_the_crosswalk_covers_everyone(simulated) -> None:
    people = simulated.tables["insured_people"]
    local = people["updated_at"].dt.convert_time_zone("Asia/Ho_Chi_Minh").dt.date()
    assert people.filter(local >= datetime(2025, 8, 1).date())["pin"].null_count() == 0
    assert people.filter(local < datetime(2025, 8, 1).date())["pin"].null_count() > 0
    crosswalk = simulated.crosswalks["insurance_code_to_pin"]
    assert set(crosswalk["insurance_code"]) == set(people["insurance_code"])
    assert crosswalk["pin"].null_count() == 0
    tombstones = simulated.tables["contributions"]["deleted_at"].is_not_null().sum()
    assert 0 < tombstones < simulated.tables["contributions"].height * 0.02


@pytest.fixture(scope="module")
def backend(pg_server: str) -> Iterator[tuple[str, SimulatedSource]]:
    url = with_database(pg_server, f"ndc_test_insurance_{uuid.uuid4().hex[:8]}")
    sim = insurance.simulate(API_SPEC)
    try:
        insurance.write(url, sim, API_SPEC)
        yield url, sim
    finally:
        drop_database(url)


def _scalar(url: str, statement: str):
    with psycopg.connect(url) as conn:
        return conn.execute(statement).fetchone()[0]


def test_write_creates_the_backend(backend) -> None:
    url, sim = backend
    for table in TABLES:
        assert _scalar(url, f"select count(*) from {table}") == sim.tables[table].height
    assert _scalar(url, "select count(*) from simulator.defect_manifest") == sim.manifest.height
    assert _scalar(url, "select count(*) from simulator.insurance_code_to_pin") == \
        sim.crosswalks["insurance_code_to_pin"].height
    assert _scalar(url, "select count(*) from contributions where deleted_at is not null") > 0


@pytest.fixture(scope="module")
def api(backend) -> Iterator[str]:
    server, base_url = start_in_thread(backend[0], token=TOKEN, rate_limit=0.0, fault_rate=0.0, seed=1)
    try:
        yield base_url
    finally:
        server.shutdown()


def _client(base_url: str, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=30)


def test_requests_without_a_valid_token_are_refused(api) -> None:
    for token in (None, "wrong"):
        with _client(api, token) as client:
            response = client.get("/v1/employers")
        assert response.status_code == 401
        assert response.json()["status"] == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_schema_lists_the_backend_columns_in_order(api) -> None:
    with _client(api) as client:
        body = client.get("/v1/contributions/schema").json()
    assert body == {"resource": "contributions", "fields": [
        {"name": "contribution_id", "type": "integer"}, {"name": "insurance_code", "type": "string"},
        {"name": "employer_code", "type": "string"}, {"name": "contribution_month", "type": "date"},
        {"name": "amount", "type": "number"}, {"name": "deleted_at", "type": "timestamp"},
        {"name": "updated_at", "type": "timestamp"}]}
    with _client(api) as client:
        fields = client.get("/v1/insured_people/schema").json()["fields"]
    assert [f["name"] for f in fields] == insurance.PEOPLE_COLUMNS


def _page_through(client: httpx.Client, resource: str, **params) -> tuple[list[dict], int]:
    records, pages, cursor = [], 0, None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"/v1/{resource}", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        records.extend(body["data"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return records, pages


def _backend_order(url: str, resource: str, where: str = "true") -> list[tuple]:
    key = insurance.PRIMARY_KEYS[resource]
    with psycopg.connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        rows = conn.execute(f"select {key}, to_char(updated_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                            f" from {resource} where {where} order by updated_at, {key}").fetchall()
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("resource", TABLES)
def test_paging_returns_every_row_once_in_order(api, backend, resource: str) -> None:
    key = insurance.PRIMARY_KEYS[resource]
    with _client(api) as client:
        records, pages = _page_through(client, resource, limit=100)
    expected = _backend_order(backend[0], resource)
    assert [(r[key], r["updated_at"]) for r in records] == expected
    assert pages == max(1, -(-len(expected) // 100))
    assert list(records[0]) == [c for c in backend[1].tables[resource].columns]


def test_values_are_json_typed(api) -> None:
    with _client(api) as client:
        records, _ = _page_through(client, "contributions", limit=5000)
    sample = records[0]
    assert isinstance(sample["contribution_id"], int) and isinstance(sample["amount"], float)
    assert len(sample["contribution_month"]) == 10 and sample["contribution_month"].endswith("-01")
    assert sample["updated_at"].endswith("Z") and len(sample["updated_at"]) == len("2025-01-01T00:00:00.000000Z")
    deleted = [r["deleted_at"] for r in records]
    assert None in deleted and any(isinstance(d, str) and d.endswith("Z") for d in deleted)


def test_window_filter(api, backend) -> None:
    start, end = "2025-03-01T00:00:00Z", "2025-03-15T12:00:00+00:00"
    with _client(api) as client:
        records, _ = _page_through(client, "contributions", updated_from=start, updated_to=end, limit=250)
    expected = _backend_order(backend[0], "contributions",
                              "updated_at >= '2025-03-01T00:00:00Z' and updated_at < '2025-03-15T12:00:00Z'")
    assert expected
    assert [(r["contribution_id"], r["updated_at"]) for r in records] == expected
    bounds = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 15, 12, tzinfo=UTC)
    assert all(bounds[0] <= datetime.fromisoformat(r["updated_at"]) < bounds[1] for r in records)


@pytest.mark.parametrize(("path", "status", "named"), [
    ("/v1/pensions", 404, "pensions"),
    ("/v1/employers?limit=0", 400, "limit"),
    ("/v1/employers?limit=5001", 400, "limit"),
    ("/v1/employers?updated_from=yesterday", 400, "updated_from"),
    ("/v1/employers?updated_to=2024-01-01T00:00:00Z&updated_from=2025-01-01T00:00:00Z", 400, "updated_to"),
    ("/v1/employers?cursor=not-a-cursor", 400, "cursor"),
    ("/v1/employers?page=2", 400, "page"),
])
def test_bad_requests_name_the_problem(api, path: str, status: int, named: str) -> None:
    with _client(api) as client:
        response = client.get(path)
    assert response.status_code == status
    assert named in response.json()["error"]


def test_rate_limit_answers_429_with_retry_after(backend) -> None:
    server, base_url = start_in_thread(backend[0], token=TOKEN, rate_limit=2.0, fault_rate=0.0, seed=1)
    try:
        with _client(base_url) as client:
            statuses = [client.get("/v1/employers", params={"limit": 1}) for _ in range(5)]
        limited = [r for r in statuses if r.status_code == 429]
        assert statuses[0].status_code == 200 and limited
        wait = float(limited[0].headers["Retry-After"])
        assert 0 < wait <= 1.0
    finally:
        server.shutdown()


def test_fault_rate_one_fails_every_data_request(backend) -> None:
    server, base_url = start_in_thread(backend[0], token=TOKEN, rate_limit=0.0, fault_rate=1.0, seed=1)
    try:
        with _client(base_url) as client:
            assert [client.get("/v1/contributions").status_code for _ in range(3)] == [500, 500, 500]
            assert client.get("/v1/contributions/schema").status_code == 200
    finally:
        server.shutdown()


def test_faults_are_deterministic_for_a_seed(backend) -> None:
    outcomes = []
    for _ in range(2):
        server, base_url = start_in_thread(backend[0], token=TOKEN, rate_limit=0.0, fault_rate=0.5, seed=7)
        try:
            with _client(base_url) as client:
                outcomes.append([client.get("/v1/employers", params={"limit": 1}).status_code for _ in range(12)])
        finally:
            server.shutdown()
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 500}
