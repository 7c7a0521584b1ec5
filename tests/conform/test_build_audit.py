"""Gate 2 inside the publish step, on the five simulated sources (real PostgreSQL, MariaDB, dbt, pandera).

A built shared model that fails its contract publishes nothing: consumers keep reading the previous version (a
concurrent reader sees ``citizens`` and ``province_statistics`` consistent with each other throughout), the
operator is told the relation, check and sample rows, the history records it, and after the fix the next run
publishes.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from ndc_lab.faults.checks import SHARED_CONSISTENT as CONSISTENT
from ndc_lab.simulate.all_sources import five_sources
from ndc_lab.simulate.common import SourceSpec

from ndc.conform import dbt
from ndc.conform.publish import active_schema
from ndc.errors import PublishBlockedError
from ndc.tasks import publish_build
from ndc.warehouse import database
from tests.helpers.conform import build
from tests.helpers.database import query, scalar

SPEC = SourceSpec(citizens=3_000, seed=606, defect_rate=0.005)


@pytest.fixture(scope="module")
def published(request, dbs, tmp_path_factory):
    mariadb = request.getfixturevalue("mariadb_server")
    with five_sources(dbs.warehouse, SPEC, run=dbs.run, drops=tmp_path_factory.mktemp("drops"),
                      mariadb_url=mariadb) as loaded:
        dbt.parse()
        prepared = build()
        publish_build(prepared["build_schema"], run_id="first", as_of=prepared["started_at"])
        yield loaded


class Reader(threading.Thread):
    """A consumer reading both views in one statement, again and again, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.reads, self.mismatches, self.counts = url, 0, [], set()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                population, living, citizens = conn.execute(CONSISTENT).fetchone()
                self.reads += 1
                self.counts.add(citizens)
                if population != living:
                    self.mismatches.append((population, living))
                time.sleep(0.01)


def test_the_first_publish_passed_gate_2_and_recorded_it(dbs, published):
    rows = dict(query(dbs.warehouse, "select dataset, outcome from ndc_meta.contract_results where gate = 'publish'"
                      " and run_id = 'first'"))
    assert rows == {f"shared.{m}": "pass" for m in dbt.shared_models()}
    checked = scalar(dbs.warehouse, "select rows_checked from ndc_meta.contract_results where run_id = 'first'"
                     " and dataset = 'shared.citizens'")
    assert checked == scalar(dbs.warehouse, "select count(*) from shared.citizens"), "first publish: every row"


def test_a_shared_model_failing_its_contract_publishes_nothing_and_the_fix_publishes(dbs, published):
    before = active_schema_of(dbs)
    publications = scalar(dbs.warehouse, "select count(*) from ndc_meta.publications")
    reader = Reader(dbs.warehouse)
    reader.start()
    try:
        # A faulty transformation: the build holds citizens with an impossible sex code and a broken PIN.
        prepared = build()
        building = prepared["build_schema"]
        assert building != before
        bad = [r[0] for r in query(dbs.warehouse, f"select citizen_id from {building}.citizens order by 1 limit 3")]
        with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
            conn.execute(f"update {building}.citizens set sex = 'X' where citizen_id = any(%s)", (bad[:2],))
        with pytest.raises(PublishBlockedError) as blocked:
            publish_build(building, run_id="faulty", as_of=prepared["started_at"])
        message = str(blocked.value)
        assert building in message
        assert "citizens: check" in message and "sex" in message
        assert all(pin in message for pin in bad[:2]), "sample rows name the failing keys"
        assert blocked.value.dataset == "shared.citizens"
        assert "runbook-contract-failures" in message
        assert active_schema_of(dbs) == before, "consumers stay on the last good version"
        assert scalar(dbs.warehouse, "select count(*) from ndc_meta.publications") == publications
        history = query(dbs.warehouse, "select dataset, outcome, rows_failed, failed_by_check from"
                        " ndc_meta.contract_results where run_id = 'faulty'")
        outcome = {h[0]: h[1] for h in history}
        assert outcome["shared.citizens"] == "blocked" and outcome["shared.enterprises"] == "pass"
        citizens = next(h for h in history if h[0] == "shared.citizens")
        assert citizens[2] == 2 and any("sex" in check for check in citizens[3])
        ledger = query(dbs.warehouse, "select outcome, details->>'blocked_by', details::text from ndc_meta.ledger"
                       " where kind = 'publish' and run_id = 'faulty'")
        assert ledger and ledger[0][0] == "failed" and "sex" in ledger[0][1]
        assert not any(pin in ledger[0][2] for pin in bad), "sample rows (personal data) stay out of the ledger"
        assert bad[0] not in blocked.value.summary and "sex" in blocked.value.summary

        # The fix: the next run builds again and publishes.
        prepared = build()
        publish_build(prepared["build_schema"], run_id="fixed", as_of=prepared["started_at"])
        assert active_schema_of(dbs) == prepared["build_schema"] != before
        assert scalar(dbs.warehouse, "select count(*) from shared.citizens where sex not in ('M', 'F')") == 0
        time.sleep(0.2)
    finally:
        reader.stop.set()
        reader.join(timeout=30)
    assert reader.reads > 10
    assert reader.mismatches == [], "a reader saw citizens and province_statistics from different builds"


def test_whole_table_rules_block_a_shrunken_build(dbs, published):
    prepared = build()
    building = prepared["build_schema"]
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        conn.execute(f"delete from {building}.citizens where citizen_id in (select citizen_id from {building}.citizens"
                     f" order by citizen_id limit (select count(*) * 6 / 10 from {building}.citizens))")
        # Without its primary key constraint, a repeated enterprise is caught by the uniqueness rule.
        (constraint,) = conn.execute("select conname from pg_constraint where contype = 'p' and conrelid ="
                                     f" '{building}.enterprises'::regclass").fetchone()
        conn.execute(f'alter table {building}.enterprises drop constraint "{constraint}"')
        conn.execute(f"insert into {building}.enterprises select * from {building}.enterprises"
                     " order by enterprise_code limit 1")
    with pytest.raises(PublishBlockedError) as blocked:
        publish_build(building, run_id="shrunk", as_of=prepared["started_at"])
    message = str(blocked.value)
    for check in ("row_count_change", "citizens_reconcile_with_landing", "population_reconciles_with_citizens",
                  "enterprises: check primary_key_unique"):
        assert check in message
    assert "NDC_PUBLISH_MAX_ROW_CHANGE" in message


def active_schema_of(dbs) -> str | None:
    with database.connect(dbs.warehouse) as conn:
        return active_schema(conn)


V2_CONTRACT = """
import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData
from pandera.typing.polars import Series

from ndc.contracts.shared import SharedContract


class DataQualitySummaryWithoutLinks(SharedContract):
    \"\"\"shared.data_quality_summary without linked_records (a breaking change).\"\"\"

    source_name: str = pa.Field(nullable=False)
    dataset: str = pa.Field(nullable=False)
    current_rows: int = pa.Field(nullable=False)
    deleted_rows: int = pa.Field(nullable=False)
    quarantined_rows: int = pa.Field(nullable=False)
    identity_exceptions: int = pa.Field(nullable=False)
    reference_exceptions: int = pa.Field(nullable=False)
    last_loaded_at: Series[pl.Datetime("us", "UTC")] = pa.Field(nullable=True)

    class Config:
        name = "shared.data_quality_summary"
        metadata = {"version": "VERSION", "primary_key": ["source_name", "dataset"],
                    "dbt_model": "data_quality_summary"}

    @pa.dataframe_check(name="counts_not_negative")
    def _counts(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.min_horizontal("current_rows", "deleted_rows", "quarantined_rows") >= 0)


CONTRACTS = (DataQualitySummaryWithoutLinks,)
"""


def contract_module(version: str, folder, monkeypatch):
    """A contract module (on sys.path) that defines shared.data_quality_summary without linked_records."""
    import importlib

    name = f"ndc_test_contracts_{version.replace('.', '_')}"
    (folder / f"{name}.py").write_text(V2_CONTRACT.replace("VERSION", version))
    monkeypatch.syspath_prepend(str(folder))
    return importlib.import_module(name)


@pytest.fixture
def fresh_registry():
    """The contract registry is re-read after the test (which registers a module of its own)."""
    from ndc.contracts import all_contracts

    yield
    all_contracts.cache_clear()


def test_removing_a_column_needs_a_new_version_and_v1_and_v2_are_both_published(dbs, published, tmp_path,
                                                                                 monkeypatch, fresh_registry):
    import json
    import shutil

    import yaml

    from ndc.conform.publish import publish
    from ndc.contracts import all_contracts, contract_of, get_contract
    from ndc.contracts.compat import check, dbt_agreement
    from ndc.settings import REPO_ROOT

    released = json.loads((REPO_ROOT / "plugins/ndc/contracts/released.json").read_text())
    # The column removed under the released major version: the compatibility check fails, naming it.
    patch = contract_of(contract_module("1.0.1", tmp_path, monkeypatch).DataQualitySummaryWithoutLinks)
    others = [c for c in all_contracts() if c.name != "shared.data_quality_summary"]
    report = check([*others, patch], released)
    assert not report.ok
    assert any("shared.data_quality_summary" in str(c) and "linked_records" in str(c) for c in report.breaking)

    # As a new major version: the check passes, and dbt publishes v2 beside v1 (dbt model versions).
    contract_module("2.0.0", tmp_path, monkeypatch)
    monkeypatch.setenv("NDC_CONTRACT_MODULES", "ndc_test_contracts_2_0_0")
    all_contracts.cache_clear()
    v2 = get_contract("shared.data_quality_summary", 2)
    assert "linked_records" not in v2.columns and v2.relation == "data_quality_summary_v2"
    assert check(list(all_contracts()), released).ok
    project = tmp_path / "dbt_project"
    shutil.copytree(dbt.project_dir(), project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    models_yml = project / "models/shared/_shared__models.yml"
    spec = yaml.safe_load(models_yml.read_text())
    model = next(m for m in spec["models"] if m["name"] == "data_quality_summary")
    model["latest_version"] = 2
    model["versions"] = [
        {"v": 1, "deprecation_date": "2027-06-30", "config": {"alias": "data_quality_summary"}},
        {"v": 2, "columns": [{"include": "all", "exclude": ["linked_records"]}]},
    ]
    models_yml.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
    (project / "models/shared/data_quality_summary.sql").rename(project / "models/shared/data_quality_summary_v1.sql")
    columns = [c for c in get_contract("shared.data_quality_summary", 1).columns if c != "linked_records"]
    (project / "models/shared/data_quality_summary_v2.sql").write_text(
        f"select {', '.join(columns)} from {{{{ ref('data_quality_summary', v=1) }}}}\n")
    monkeypatch.setenv("NDC_DBT_PROJECT_DIR", str(project))
    manifest = project / "target/manifest.json"
    assert dbt.run(["parse"]).returncode == 0
    assert dbt_agreement(manifest, list(all_contracts())) == []
    relations = dbt.shared_models(manifest)
    assert {"data_quality_summary", "data_quality_summary_v2"} <= set(relations)

    prepared = build()
    with database.connect(dbs.warehouse) as conn:
        publish(conn, prepared["build_schema"], relations, run_id="v2", deprecations=dbt.deprecations(manifest))
    v1_rows = query(dbs.warehouse, "select source_name, dataset, linked_records from shared.data_quality_summary")
    v2_rows = query(dbs.warehouse, "select source_name, dataset, current_rows from shared.data_quality_summary_v2")
    assert len(v1_rows) == len(v2_rows) > 0
    assert not query(dbs.warehouse, "select 1 from information_schema.columns where table_schema = 'shared'"
                     " and table_name = 'data_quality_summary_v2' and column_name = 'linked_records'")
    comment = scalar(dbs.warehouse, "select obj_description('shared.data_quality_summary'::regclass)")
    assert "DEPRECATED" in comment and "2027-06-30" in comment and "data_quality_summary_v2" in comment
    notice = query(dbs.warehouse, "select details->>'deprecated_on', details->>'successor' from ndc_meta.ledger"
                   " where kind = 'deprecation_notice' and target = 'shared.data_quality_summary'")
    assert notice == [("2027-06-30", "data_quality_summary_v2")]
    assert scalar(dbs.warehouse, "select outcome from ndc_meta.contract_results where run_id = 'v2'"
                  " and dataset = 'shared.data_quality_summary_v2'") == "pass"


def test_a_value_that_does_not_fit_its_contract_type_is_named(dbs, published):
    from decimal import Decimal

    from ndc.conform.build_audit import _frame, contract_for

    contract = contract_for("enterprises")
    columns = list(contract.columns)
    row = list(query(dbs.warehouse, f"select {', '.join(columns)} from shared.enterprises limit 1")[0])
    frame, misfits = _frame([tuple(row)], contract)
    assert frame is not None and misfits == []
    row[columns.index("tax_declared_vnd")] = Decimal("12.5")  # whole dong only
    frame, misfits = _frame([tuple(row)], contract)
    assert frame is None and misfits == ["tax_declared_vnd"]
