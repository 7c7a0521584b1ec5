"""Issue 21, items 11 and 12, as attacks on a real PostgreSQL.

11. Personal data where it is never purged: the ledger (append-only, never purged) must not keep an error's row
    values, only check names, error classes and counts; the residence snapshot's superseded versions fall under
    the retention purge.
12. Safety overrides leave a trace: ``accept_row_drop``, ``accept_row_change``, ``accept_stale``,
    ``allow_mass_delete`` and a purge's ``retention_days`` are in ``details.overrides`` of the ledger row of the
    run that used them, and a run without one carries none.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest
import yaml
from ndc_lab.environment import restore, snapshot
from ndc_lab.simulate import population
from psycopg import sql

from ndc.audit.retention import purge
from ndc.conform import dbt
from ndc.conform.build_audit import contract_for
from ndc.conform.freshness import StaleSourceError
from ndc.errors import BatchBlockedError, NdcError, PublishBlockedError
from ndc.landing.full_compare import compare_table
from ndc.settings import get_settings
from ndc.tasks import extract_table, prepare_conform, publish_build
from tests.helpers import REPO
from tests.helpers.database import query, scalar
from tests.helpers.sources import write_citizens

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
PLANTED_NAME = "Trần Thị Bí Mật Cài Sẵn"
RELATION = "identity_exceptions"  # a shared relation with no landing reconciliation: built here by hand


@pytest.fixture(scope="module")
def sources(dbs, tmp_path_factory):
    """The repository's sources, with a row_count_drop rule on population.citizens; 60 clean citizens."""
    folder = tmp_path_factory.mktemp("sources")
    shutil.copytree(REPO / "dags/sources", folder, dirs_exist_ok=True)
    path = folder / "public_security/population.yml"
    config = yaml.safe_load(path.read_text())
    next(t for t in config["tables"] if t["name"] == "citizens")["row_count_drop"] = {
        "max_share": 0.5, "min_previous_rows": 10}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    saved = snapshot(["NDC_SOURCES_DIR"])
    os.environ["NDC_SOURCES_DIR"] = str(folder)
    clean = population.simulate(population.PopulationSpec(citizens=200, seed=21, defect_rate=0)).citizens
    yield clean.filter(pl.col("updated_at") < datetime(2025, 6, 1, tzinfo=UTC)).head(60)
    restore(saved)


def _ledger(url: str, run_id: str, kind: str = "extract") -> tuple[str, dict]:
    """(outcome, details) of the run's one ledger row."""
    (row,) = query(url, "select outcome, details from ndc_meta.ledger where run_id = %s and kind = %s",
                   (run_id, kind))
    return row


def _details_text(url: str, run_id: str) -> str:
    return scalar(url, "select string_agg(details::text, ' ') from ndc_meta.ledger where run_id = %s", (run_id,))


# --- item 11: no row values in the ledger --------------------------------------------------------------------------

def test_a_database_error_quoting_a_citizen_stays_out_of_the_ledger(dbs, sources):
    """The merge fails with PostgreSQL's ``Failing row contains (<pin>, <name>, …)``: the ledger row keeps the error
    class, SQLSTATE, constraint and the run's counts per check, never the row."""
    write_citizens(dbs.source, sources)
    extract_table("population", "citizens", *EVERYTHING, run_id="clean", full_refresh=True)
    changed = pl.col("i") < 2  # row 0: a blank name (quarantined: a check and a count); row 1: the planted name
    planted = sources.with_row_index("i").with_columns(
        full_name=pl.when(pl.col("i") == 0).then(pl.lit(" ")).when(pl.col("i") == 1).then(pl.lit(PLANTED_NAME))
        .otherwise(pl.col("full_name")),
        updated_at=pl.when(changed).then(pl.col("updated_at") + timedelta(hours=1)).otherwise(pl.col("updated_at")),
    ).drop("i")
    pin = planted["pin"][1]
    write_citizens(dbs.source, planted)
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:  # the warehouse refuses the new version
        conn.execute(sql.SQL("alter table landing_population.citizens add constraint planted_name_refused"
                             " check (full_name is distinct from {})").format(sql.Literal(PLANTED_NAME)))
    try:
        with pytest.raises(psycopg.errors.CheckViolation) as caught:
            extract_table("population", "citizens", *EVERYTHING, run_id="leaky", full_refresh=True)
    finally:
        with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
            conn.execute("alter table landing_population.citizens drop constraint planted_name_refused")
    assert PLANTED_NAME in str(caught.value) and pin in str(caught.value), "the attack: the error quotes the row"

    outcome, details = _ledger(dbs.warehouse, "leaky")
    text = _details_text(dbs.warehouse, "leaky")
    assert outcome == "failed"
    assert PLANTED_NAME not in text and pin not in text and "Bí Mật" not in text
    assert details["error"].startswith("CheckViolation (SQLSTATE 23514")
    assert "planted_name_refused" in details["error"]  # the schema object it concerns, not the value
    assert details["failed_by_check"] == {"full_name_not_blank": 1}
    assert details["batches"] >= 1 and "overrides" not in details


def test_a_blocked_publish_keeps_the_failing_rows_keys_out_of_the_ledger(dbs, sources, conform_ready):
    """Gate 2's message lists sample rows (a citizen's PIN as the record key): the ledger and the contract
    result keep the check names and counts only."""
    pin = "079912345678"
    building = _build(dbs, 1_200, bad_key=pin)
    with pytest.raises(PublishBlockedError) as caught:
        publish_build(building, run_id="gate2-leaky")
    assert pin in str(caught.value), "the attack: the exception's sample rows hold the PIN"
    outcome, details = _ledger(dbs.warehouse, "gate2-leaky", "publish")
    assert outcome == "failed" and pin not in _details_text(dbs.warehouse, "gate2-leaky")
    check = "exception_reason_allowed(shared.identity_exceptions)"
    assert details["blocked_by"] == check and details["error"].startswith("PublishBlockedError")
    assert details["failures"] == [{"relation": RELATION, "check": check, "rows": 1}]
    stored = query(dbs.warehouse, "select failed_by_check::text, coalesce(message, '') from"
                   " ndc_meta.contract_results where run_id = 'gate2-leaky'")
    assert stored and not any(pin in " ".join(row) for row in stored)


def test_superseded_residence_versions_are_purged_the_current_ones_kept(dbs, sources):
    """``history.citizen_residence_history`` shaped as dbt's snapshot writes it (the check strategy, hard deletes
    invalidated): versions superseded before the cutoff go, each key's latest version stays, the ledger counts."""
    now = datetime.now(UTC).replace(tzinfo=None)  # dbt's snapshot timestamps: timestamp without time zone
    old, older, recent = now - timedelta(days=800), now - timedelta(days=900), now - timedelta(days=100)
    versions = [  # citizen, address, valid from, valid to
        ("001000000001", "Số 1 phố cũ", older, old), ("001000000001", "Số 1 phố mới", old, None),  # 1 goes
        ("001000000002", "Số 2 phố cũ", older, recent), ("001000000002", "Số 2 phố mới", recent, None),  # recent: kept
        ("001000000003", "Số 3 đã xoá", older, old),  # deleted at the source: its last version stays
        ("001000000004", "Số 4 lần 1", older - timedelta(days=50), older), ("001000000004", "Số 4 lần 2", older, old),
        ("001000000004", "Số 4 hiện tại", old, None),  # 2 go
    ]
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        conn.execute("create schema if not exists history")
        conn.execute("drop table if exists history.citizen_residence_history")
        conn.execute("create table history.citizen_residence_history (citizen_id text, residence_province_code text,"
                     " residence_ward text, residence_address text, household_id text, dbt_scd_id text,"
                     " dbt_updated_at timestamp, dbt_valid_from timestamp, dbt_valid_to timestamp)")
        for n, (citizen, address, valid_from, valid_to) in enumerate(versions):
            conn.execute("insert into history.citizen_residence_history values (%s, '01', 'Phường 1', %s, null,"
                         " md5(%s), %s, %s, %s)", (citizen, address, str(n), valid_from, valid_from, valid_to))

    dry = purge(dry_run=True)
    assert dry.snapshots == {"history.citizen_residence_history": 3}
    assert scalar(dbs.warehouse, "select count(*) from history.citizen_residence_history") == len(versions)

    done = purge(run_id="purge-snapshots")
    assert done.snapshots == {"history.citizen_residence_history": 3}
    left = query(dbs.warehouse, "select residence_address from history.citizen_residence_history"
                 " order by citizen_id, dbt_valid_from")
    assert [r[0] for r in left] == ["Số 1 phố mới", "Số 2 phố cũ", "Số 2 phố mới", "Số 3 đã xoá", "Số 4 hiện tại"]
    outcome, details = _ledger(dbs.warehouse, "purge-snapshots", "purge")
    assert outcome == "success" and details["snapshot_versions"] == {"history.citizen_residence_history": 3}
    assert scalar(dbs.warehouse, "select rows_in from ndc_meta.ledger where run_id = 'purge-snapshots'") >= 3
    assert "phố cũ" not in _details_text(dbs.warehouse, "purge-snapshots")
    assert purge(run_id="purge-again").snapshots == {}


# --- item 12: safety overrides on the ledger row of the run that used them --------------------------------------------

def test_accept_row_drop_is_on_the_extract_row(dbs, sources):
    write_citizens(dbs.source, sources)
    extract_table("population", "citizens", *EVERYTHING, run_id="drop-base", full_refresh=True)
    write_citizens(dbs.source, sources.head(20))
    with pytest.raises(BatchBlockedError):
        extract_table("population", "citizens", *EVERYTHING, run_id="drop-refused", full_refresh=True)
    extract_table("population", "citizens", *EVERYTHING, run_id="drop-accepted", full_refresh=True,
                  accept_row_drop=True)
    assert "overrides" not in _ledger(dbs.warehouse, "drop-base")[1]
    assert "overrides" not in _ledger(dbs.warehouse, "drop-refused")[1]
    outcome, details = _ledger(dbs.warehouse, "drop-accepted")
    assert outcome == "success"
    assert details["overrides"] == {"accept_row_drop": {"took_effect": True, "check": "row_count_drop",
                                                        "rows_in": 20}}


def test_allow_mass_delete_is_on_the_full_compare_row(dbs, sources):
    write_citizens(dbs.source, sources)
    extract_table("population", "citizens", *EVERYTHING, run_id="mass-base", full_refresh=True)
    write_citizens(dbs.source, sources.head(20))  # 40 of 60 keys gone: refused as a broken source
    with pytest.raises(NdcError, match="refusing"):
        compare_table("population", "citizens", run_id="mass-refused")
    compare_table("population", "citizens", run_id="mass-allowed", allow_mass_delete=True)
    outcome, details = _ledger(dbs.warehouse, "mass-refused", "full_compare")
    assert outcome == "failed" and "overrides" not in details
    outcome, details = _ledger(dbs.warehouse, "mass-allowed", "full_compare")
    assert outcome == "success"
    assert details["overrides"]["allow_mass_delete"]["took_effect"] is True
    assert details["overrides"]["allow_mass_delete"]["rows_marked_deleted"] == 40
    assert "sample_deleted" not in details  # keys of deleted citizens are not kept in the ledger
    write_citizens(dbs.source, sources)


def test_retention_days_is_on_the_purge_row(dbs, sources):
    purge(run_id="purge-setting")
    purge(retention_days=365, run_id="purge-override")
    assert "overrides" not in _ledger(dbs.warehouse, "purge-setting", "purge")[1]
    details = _ledger(dbs.warehouse, "purge-override", "purge")[1]
    setting = get_settings().retention_days
    assert details["retention_days"] == 365 and setting != 365
    assert details["overrides"] == {"retention_days": {"took_effect": True, "value": 365, "setting": setting}}


@pytest.fixture(scope="module")
def conform_ready(dbs, sources):
    """The conform path with the dbt build replaced by one hand-built shared relation (the manifest is the real
    one: `ndc dbt parse`, as CI runs before the tests)."""
    if not dbt.manifest_file().exists():
        dbt.parse()
    columns = list(contract_for(RELATION).columns)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dbt, "shared_models", lambda manifest_path=None: {RELATION: columns})
        yield columns


def _build(dbs, rows: int, *, schema: str | None = None, bad_key: str | None = None) -> str:
    """``<schema>.identity_exceptions`` with ``rows`` valid rows (one of them failing its contract with record key
    ``bad_key``), as dbt would have built it into the schema consumers are not reading; returns the schema."""
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        if schema is None:
            active = conn.execute("select build_schema from ndc_meta.publications order by publication_id desc"
                                  " limit 1").fetchone()
            schema = "shared_b" if active and active[0] == "shared_a" else "shared_a"
        conn.execute(f"create schema if not exists {schema}")
        conn.execute(f"drop table if exists {schema}.{RELATION}")
        conn.execute(f"create table {schema}.{RELATION} (source_name text, dataset text, record_key text,"
                     " exception_kind text, exception_reason text, identifier_kind text, candidate_citizens bigint,"
                     " loaded_at timestamptz)")
        conn.execute(f"insert into {schema}.{RELATION} select 'taxation', 'taxpayers', 'TX' || lpad(n::text, 8, '0'),"
                     " 'identity', 'pin_not_found', 'pin', 0, now() from generate_series(1, %s) n", (rows,))
        if bad_key:
            conn.execute(f"update {schema}.{RELATION} set record_key = %s, exception_reason = 'planted_reason'"
                         " where record_key = 'TX00000001'", (bad_key,))
    return schema


def _conform(dbs, rows: int, run_id: str, *, accept_stale: bool = False, accept_row_change: bool = False) -> dict:
    """One conform run as the DAG runs it: prepare (freshness gate, plan), a build, publish."""
    prepared = prepare_conform(accept_stale=accept_stale, full_refresh=True, run_id=run_id)
    _build(dbs, rows, schema=prepared["plan"]["build_schema"])
    return publish_build(prepared["plan"], run_id=run_id, as_of=prepared["started_at"],
                         accept_row_change=accept_row_change)


def test_accept_stale_is_on_the_publish_row(dbs, sources, conform_ready):
    _conform(dbs, 1_200, "stale-none")
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:  # households last loaded 8 days ago
        conn.execute("insert into landing_population.households (household_id, updated_at, _ndc_row_hash,"
                     " _ndc_batch_id, _ndc_run_id, _ndc_loaded_at) values ('HK0000000001', now(), 'h',"
                     " gen_random_uuid(), 'test', now() - interval '8 days')")
    try:
        with pytest.raises(StaleSourceError):
            prepare_conform(full_refresh=True, run_id="stale-refused")
        _conform(dbs, 1_200, "stale-accepted", accept_stale=True)
    finally:
        with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
            conn.execute("delete from landing_population.households where household_id = 'HK0000000001'")
    assert "overrides" not in _ledger(dbs.warehouse, "stale-none", "publish")[1]
    outcome, details = _ledger(dbs.warehouse, "stale-accepted", "publish")
    assert outcome == "success"
    assert details["overrides"] == {"accept_stale": {"took_effect": True, "tables": ["population.households"]}}


def test_accept_row_change_is_on_the_publish_row(dbs, sources, conform_ready):
    _conform(dbs, 1_200, "change-base")
    with pytest.raises(PublishBlockedError, match="row_count_change"):
        _conform(dbs, 400, "change-refused")
    _conform(dbs, 400, "change-accepted", accept_row_change=True)
    assert "overrides" not in _ledger(dbs.warehouse, "change-base", "publish")[1]
    outcome, details = _ledger(dbs.warehouse, "change-refused", "publish")
    assert outcome == "failed" and details["blocked_by"] == "row_count_change" and "overrides" not in details
    outcome, details = _ledger(dbs.warehouse, "change-accepted", "publish")
    assert outcome == "success"
    assert details["overrides"] == {"accept_row_change": {"took_effect": True, "relations": [RELATION]}}
    assert json.loads(json.dumps(details["models"])) == {RELATION: 400}
