"""The contract registry (every landing table and shared view, by name and major version), the breaking-change check
against released.json, the agreement of the shared contracts with dbt's model contracts, and the shared contracts'
own data checks."""

from __future__ import annotations

import copy
import json
import sys
import typing
from datetime import UTC, date, datetime
from decimal import Decimal

import pandera.polars as pa
import polars as pl
import pytest
from click.testing import CliRunner

from ndc.cli import main
from ndc.config.sources import load_sources
from ndc.conform import dbt
from ndc.contracts import BUNDLE_MODULE_PREFIX, all_contracts, contract_of, contracts, get_contract, registry_of
from ndc.contracts import shared as shared_contracts
from ndc.contracts.compat import (
    BreakingChange,
    check,
    dbt_agreement,
    dbt_shared_models,
    is_widening,
    load_released,
    release,
    schema_of,
)
from ndc.errors import ConfigError
from ndc.settings import get_settings

NAME = "shared.citizens"


@pytest.fixture(scope="module")
def manifest_path():
    return dbt.manifest_file() if dbt.manifest_file().exists() else dbt.parse()


@pytest.fixture(scope="module")
def released():
    """The released schemas of today's registry (independent of released.json's state)."""
    return release(list(all_contracts()), {})


def variant(model: type, version: str, *, drop: tuple[str, ...] = (), types: dict | None = None,
            nullable: dict[str, bool] | None = None, add: dict | None = None) -> type:
    """A copy of a contract model's columns (no checks: the compatibility check reads only the schema) with a
    column dropped, retyped, made (not) nullable or added, under ``version``."""
    hints = typing.get_type_hints(model)
    schema = model.to_schema()
    annotations, namespace = {}, {}
    for column, spec in schema.columns.items():
        if column in drop:
            continue
        annotations[column] = (types or {}).get(column, hints[column])
        namespace[column] = pa.Field(nullable=(nullable or {}).get(column, spec.nullable))
    for column, (annotation, is_nullable) in (add or {}).items():
        annotations[column] = annotation
        namespace[column] = pa.Field(nullable=is_nullable)
    config = model.__config__
    namespace["Config"] = type("Config", (), {"name": config.name,
                                              "metadata": {**config.metadata, "version": version}})
    namespace["__annotations__"] = annotations
    namespace["__module__"] = __name__
    return type(f"{model.__name__}Variant", (shared_contracts.SharedContract,), namespace)


def registry_with(*models: type) -> list:
    """Today's registry with ``models`` in place of the registered contracts of the same name and major."""
    replaced = [contract_of(m) for m in models]
    keys = {(c.name, c.major) for c in replaced}
    return [c for c in all_contracts() if (c.name, c.major) not in keys] + replaced


# -- the registry --------------------------------------------------------------------------------------------------

def test_registry_covers_every_landing_table():
    tables = [t.contract for source in load_sources(get_settings().sources_dir) for t in source.tables]
    assert len(tables) >= 16
    for name in tables:
        assert get_contract(name).kind == "landing", name


def test_registry_covers_every_shared_model(manifest_path):
    nodes = dbt_shared_models(json.loads(manifest_path.read_text()))
    assert {model for model, _ in nodes} == {"citizens", "enterprises", "province_statistics", "identity_exceptions",
                                            "data_quality_summary"}
    for model, version in nodes:
        contract = get_contract(f"shared.{model}", version)
        assert contract.kind == "shared" and contract.primary_key
        assert contract.relation == nodes[model, version]["alias"]


def test_several_majors_of_one_name():
    v2 = variant(shared_contracts.Citizens, "2.0.0", drop=("ethnicity",))
    both = registry_of([v2, shared_contracts.Citizens])
    assert [(c.name, c.version) for c in both] == [(NAME, "1.0.0"), (NAME, "2.0.0")]
    assert both[1].relation == "citizens_v2" and both[0].relation == "citizens"
    assert get_contract(NAME, 1).version == "1.0.0" and contracts()[NAME] == get_contract(NAME)
    with pytest.raises(ConfigError, match="no major version 7"):
        get_contract(NAME, 7)


def test_two_models_for_one_major_are_refused():
    clash = variant(shared_contracts.Citizens, "1.2.0")
    with pytest.raises(ConfigError, match=r"defined twice: ndc\.contracts\.shared\.Citizens.*test_registry"):
        registry_of([shared_contracts.Citizens, clash])


def test_a_version_must_be_semantic():
    with pytest.raises(ConfigError, match=r"X\.Y\.Z"):
        contract_of(variant(shared_contracts.Citizens, "1.0"))


BUNDLE_CONTRACT = '''
import pandera.polars as pa

from ndc.contracts.base import NdcContract


class Parcels(NdcContract):
    parcel_id: str = pa.Field(nullable=False)

    class Config:
        name = "zz_bundle.parcels"
        metadata = {"version": "1.2.0"}


CONTRACTS = (Parcels,)
'''


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A DAG bundle of its own (NDC_DAGS_DIR) with a contracts folder; the registry re-scans around the test."""
    monkeypatch.setenv("NDC_DAGS_DIR", str(tmp_path))
    (tmp_path / "contracts").mkdir()
    all_contracts.cache_clear()
    yield tmp_path / "contracts"
    monkeypatch.delenv("NDC_DAGS_DIR")
    all_contracts.cache_clear()
    for name in [m for m in sys.modules if m.startswith(BUNDLE_MODULE_PREFIX)]:
        del sys.modules[name]


def test_the_dag_bundles_contract_modules_are_registered(bundle):
    (bundle / "zz_bundle.py").write_text(BUNDLE_CONTRACT)
    (bundle / "_helpers.py").write_text("raise RuntimeError('not a contract module: never loaded')\n")
    found = get_contract("zz_bundle.parcels")
    assert found.version == "1.2.0" and list(found.columns) == ["parcel_id"]
    assert found.model.__module__ == "ndc_bundle_contracts_zz_bundle"
    assert get_contract(NAME).name == NAME, "beside the built-in contracts"
    all_contracts.cache_clear()
    assert get_contract("zz_bundle.parcels").model is found.model, "a second scan reuses the loaded module"


def test_a_broken_bundle_contract_module_is_named(bundle):
    (bundle / "zz_broken.py").write_text("import pandera.polars as pa\n\nCONTRACTS = (pa.DataFrameModel,\n")
    with pytest.raises(ConfigError, match=r"zz_broken\.py: cannot load contract module: SyntaxError"):
        all_contracts()
    (bundle / "zz_broken.py").write_text("NOTHING = ()\n")
    with pytest.raises(ConfigError, match=r"zz_broken\.py: a contract module must list its models in CONTRACTS"):
        all_contracts()


# -- the breaking-change check --------------------------------------------------------------------------------------

def test_check_passes_on_the_repository(manifest_path):
    result = CliRunner().invoke(main, ["contracts", "check", "--manifest", str(manifest_path)])
    assert result.exit_code == 0, result.output
    assert "no breaking change" in result.output
    assert check(list(all_contracts()), load_released()).ok


def test_removing_a_column_without_a_new_version_fails(released):
    report = check(registry_with(variant(shared_contracts.Citizens, "1.0.0", drop=("ethnicity",))), released)
    assert not report.ok
    assert [(c.contract, c.major, c.kind, c.column) for c in report.breaking] == [
        (NAME, 1, "column_removed", "ethnicity")]
    assert "shared.citizens v1 column ethnicity" in str(report.breaking[0])


def test_the_same_removal_as_a_new_major_passes(released):
    v2 = variant(shared_contracts.Citizens, "2.0.0", drop=("ethnicity",))
    report = check(registry_with(v2), released)
    assert report.ok and not report.unreleased
    assert [(c.contract, c.major, c.kind) for c in report.new_versions] == [(NAME, 2, "new_version")]
    assert "ethnicity" in report.new_versions[0].detail and "release it" in report.new_versions[0].detail
    updated = release(registry_with(v2), released)
    assert set(updated[NAME]) == {"1", "2"} and "ethnicity" not in updated[NAME]["2"]["columns"]


@pytest.mark.parametrize(("column", "annotation", "ok"), [
    ("tax_filings", pl.Int32, False),  # bigint narrowed to integer
    ("birth_date", pl.Datetime("us", "UTC"), False),  # not a widening
    ("citizen_id", pl.Int64, False),
    ("full_name", pl.String, True),  # unchanged
])
def test_narrowing_a_type_fails(released, column, annotation, ok):
    report = check(registry_with(variant(shared_contracts.Citizens, "1.0.0", types={column: annotation})), released)
    assert report.ok is ok
    if not ok:
        assert [(c.kind, c.column) for c in report.breaking] == [("type_narrowed", column)]


def test_widening_is_defined():
    assert is_widening("Int32", "Int64") and is_widening("Int16", "Int32") and is_widening("Float32", "Float64")
    assert is_widening("Decimal(precision=18, scale=0)", "Decimal(precision=38, scale=0)")
    assert not is_widening("Int64", "Int32") and not is_widening("Int64", "Float64")
    assert not is_widening("Date", "Datetime(time_unit='us', time_zone='UTC')")
    assert not is_widening("Decimal(precision=38, scale=2)", "Decimal(precision=38, scale=0)")


def test_widening_a_type_passes(released):
    widened = copy.deepcopy(released)
    widened[NAME]["1"]["columns"]["tax_filings"]["type"] = "Int32"  # released narrower than registered
    report = check(list(all_contracts()), widened)
    assert report.ok and ("type_widened", "tax_filings") in [(c.kind, c.column) for c in report.unreleased]


def test_tightening_nullability_fails(released):
    report = check(registry_with(variant(shared_contracts.Citizens, "1.0.0", nullable={"full_name": False})),
                   released)
    assert [(c.contract, c.kind, c.column) for c in report.breaking] == [(NAME, "nullability_tightened", "full_name")]
    relaxed = check(registry_with(variant(shared_contracts.Citizens, "1.0.1", nullable={"sex": True})), released)
    assert relaxed.ok and ("nullability_relaxed", "sex") in [(c.kind, c.column) for c in relaxed.unreleased]


def test_adding_a_nullable_column_passes_and_a_required_one_fails(released):
    nullable = check(registry_with(variant(shared_contracts.Citizens, "1.1.0", add={"nickname": (str, True)})),
                     released)
    assert nullable.ok
    assert [(c.kind, c.column) for c in nullable.unreleased] == [
        ("column_added", "nickname"), ("version_changed", None)]
    required = check(registry_with(variant(shared_contracts.Citizens, "1.1.0", add={"nickname": (str, False)})),
                     released)
    assert [(c.kind, c.column) for c in required.breaking] == [("column_added", "nickname")]


def test_a_retired_major_warns_and_a_regressed_version_fails(released):
    retired = copy.deepcopy(released)
    retired[NAME]["0"] = retired[NAME]["1"] | {"version": "0.9.0"}
    report = check(list(all_contracts()), retired)
    assert report.ok and [(c.contract, c.major, c.kind) for c in report.retired] == [(NAME, 0, "retired")]
    ahead = copy.deepcopy(released)
    ahead[NAME]["1"]["version"] = "1.4.0"
    assert [c.kind for c in check(list(all_contracts()), ahead).breaking] == ["version_regressed"]


def test_release_refuses_a_breaking_change_and_records_the_rest(released):
    with pytest.raises(BreakingChange, match=r"shared\.citizens v1 column ethnicity"):
        release(registry_with(variant(shared_contracts.Citizens, "1.0.0", drop=("ethnicity",))), released)
    added = release(registry_with(variant(shared_contracts.Citizens, "1.1.0", add={"nickname": (str, True)})),
                    released)
    assert added[NAME]["1"]["version"] == "1.1.0" and list(added[NAME]["1"]["columns"])[-1] == "nickname"


def test_the_cli_fails_on_a_breaking_change(tmp_path, released, manifest_path):
    """A column in the released schema that the registry no longer has = a column removed from the contract."""
    edited = copy.deepcopy(released)
    edited[NAME]["1"]["columns"]["nickname"] = {"type": "String", "nullable": True}
    path = tmp_path / "released.json"
    path.write_text(json.dumps(edited))
    runner = CliRunner()
    result = runner.invoke(main, ["contracts", "check", "--released", str(path), "--manifest", str(manifest_path)])
    assert result.exit_code == 1
    assert "breaking: shared.citizens v1 column nickname: column removed" in result.output
    refused = runner.invoke(main, ["contracts", "release", "--released", str(path)])
    assert refused.exit_code != 0 and json.loads(path.read_text()) == edited  # nothing written


def test_the_cli_release_writes_new_versions(tmp_path):
    path = tmp_path / "released.json"
    result = CliRunner().invoke(main, ["contracts", "release", "--released", str(path)])
    assert result.exit_code == 0, result.output
    assert load_released(path) == {c.name: {"1": schema_of(c)} for c in all_contracts()}


# -- agreement with dbt ---------------------------------------------------------------------------------------------

def test_shared_contracts_agree_with_dbt(manifest_path):
    assert dbt_agreement(manifest_path) == []


def test_a_mutated_manifest_is_reported_precisely(manifest_path, tmp_path):
    manifest = json.loads(manifest_path.read_text())
    node = manifest["nodes"]["model.ndc.citizens"]
    del node["columns"]["ethnicity"]
    node["columns"]["tax_filings"]["data_type"] = "integer"
    node["columns"]["sex"]["constraints"] = []
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    where = "shared.citizens v1 / dbt model citizens"
    assert sorted(dbt_agreement(path)) == sorted([
        f"{where}: column ethnicity is in the contract, not in dbt",
        f"{where}: column tax_filings: dbt data_type integer (Int32), contract Int64",
        f"{where}: column sex: dbt has no not_null constraint, contract nullable=False",
    ])


def test_every_dbt_shared_model_needs_a_contract_and_every_major_a_dbt_version(manifest_path, tmp_path):
    manifest = json.loads(manifest_path.read_text())
    v2 = copy.deepcopy(manifest["nodes"]["model.ndc.enterprises"]) | {"version": 2, "alias": "enterprises_v2"}
    manifest["nodes"]["model.ndc.enterprises.v2"] = v2
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    citizens_v2 = contract_of(variant(shared_contracts.Citizens, "2.0.0"))
    assert dbt_agreement(path, [*all_contracts(), citizens_v2]) == [
        f"shared.citizens v2: no dbt shared model 'citizens' version 2 in {path}",
        "dbt shared model enterprises v2 has no contract (expected shared.enterprises major 2 in "
        "plugins/ndc/contracts/shared.py)",
    ]


# -- the shared contracts' data checks -------------------------------------------------------------------------------

def _failed_checks(contract_name: str, frame: pl.DataFrame) -> set[str]:
    try:
        get_contract(contract_name).validate(frame)
    except pa.errors.SchemaErrors as exc:
        return {str(check) for check in exc.failure_cases["check"].to_list()}
    return set()


CITIZEN = {
    "citizen_id": "001090123456", "full_name": "Nguyễn Văn An", "birth_date": date(1990, 5, 1), "death_date": None,
    "sex": "M", "ethnicity": "Kinh", "household_id": "HK0000000001", "has_registered_household": True,
    "historic_province_code": "02", "historic_province_name": "Hà Giang", "current_province_code": "08",
    "current_province_name": "Tuyên Quang", "residence_recorded_on": date(2025, 1, 2), "is_tax_registered": True,
    "tax_filings": 3, "last_tax_filed_on": date(2025, 3, 1), "is_insured": False, "contributing_months": 0,
    "highest_enrolled_grade": None, "highest_enrolled_school_year": None,
    "source_updated_at": datetime(2025, 1, 2, tzinfo=UTC),
}


@pytest.mark.parametrize(("change", "failed"), [
    ({}, set()),
    ({"citizen_id": "099090123456"}, {"citizen_id_format"}),
    ({"citizen_id": "001091123456"}, {"pin_birth_consistency"}),
    ({"sex": "X"}, {"sex_allowed"}),
    ({"death_date": date(1980, 1, 1)}, {"death_after_birth"}),
    ({"current_province_code": "02"}, {"current_province_code_valid", "current_province_matches_historic"}),
    ({"current_province_code": "01"}, {"current_province_matches_historic"}),
    ({"historic_province_code": "99"}, {"historic_province_code_valid", "current_province_matches_historic"}),
    ({"tax_filings": -1}, {"counts_not_negative"}),
    ({"highest_enrolled_grade": 13, "highest_enrolled_school_year": "2025-2027"},
     {"grade_range", "school_year_format"}),
])
def test_citizens_checks(change, failed):
    frame = pl.DataFrame([CITIZEN | change], schema=get_contract(NAME).columns)
    assert _failed_checks(NAME, frame) == failed


def test_a_shared_contract_is_strict_about_columns_and_types():
    frame = pl.DataFrame([CITIZEN], schema=get_contract(NAME).columns)
    with pytest.raises(pa.errors.SchemaErrors, match="tax_filings"):
        get_contract(NAME).validate(frame.with_columns(pl.col("tax_filings").cast(pl.Int32)))
    with pytest.raises(pa.errors.SchemaErrors, match="extra"):
        get_contract(NAME).validate(frame.with_columns(pl.lit(1).alias("extra")))
    with pytest.raises(pa.errors.SchemaErrors, match="ethnicity"):
        get_contract(NAME).validate(frame.drop("ethnicity"))


ENTERPRISE = {
    "enterprise_code": "0100109106", "enterprise_name": "Công ty A", "legal_form": "tnhh",
    "registered_on": date(2010, 1, 1), "status": "active", "status_events": 1, "last_status_change_on": None,
    "dissolved_on": None, "open_branches": 0, "historic_province_code": "01", "historic_province_name": "Hà Nội",
    "current_province_code": "01", "current_province_name": "Hà Nội", "tax_filings": 2, "last_tax_filed_on": None,
    "tax_declared_vnd": Decimal(500), "tax_paid_vnd": Decimal(200), "tax_arrears_vnd": Decimal(300),
    "insured_employees": 4, "source_updated_at": datetime(2025, 1, 2, tzinfo=UTC),
}


@pytest.mark.parametrize(("change", "failed"), [
    ({}, set()),
    ({"enterprise_code": "0100109107"}, {"enterprise_code_format"}),
    ({"status": "closed"}, {"status_allowed"}),
    ({"legal_form": "llc"}, {"legal_form_allowed"}),
    ({"tax_arrears_vnd": Decimal(0)}, {"tax_arrears_consistent"}),
    ({"tax_paid_vnd": Decimal(900), "tax_arrears_vnd": Decimal(0)}, set()),
])
def test_enterprises_checks(change, failed):
    frame = pl.DataFrame([ENTERPRISE | change], schema=get_contract("shared.enterprises").columns)
    assert _failed_checks("shared.enterprises", frame) == failed


@pytest.mark.parametrize(("change", "failed"), [
    ({}, set()),
    ({"month": date(2025, 1, 15)}, {"month_first_day"}),
    ({"current_province_code": "02"}, {"current_province_code_valid"}),
    ({"deaths": -2}, {"counts_not_negative"}),
])
def test_province_statistics_checks(change, failed):
    row = {"current_province_code": "08", "current_province_name": "Tuyên Quang", "month": date(2025, 1, 1),
           **{c: 1 for c in ("population", "births", "deaths", "moves_in", "moves_out", "enterprises_opened",
                             "enterprises_closed", "taxpayers_registered", "insured_workers", "students")}}
    name = "shared.province_statistics"
    assert _failed_checks(name, pl.DataFrame([row | change], schema=get_contract(name).columns)) == failed


@pytest.mark.parametrize(("change", "failed"), [
    ({}, set()),
    ({"dataset": "people"}, {"dataset_is_landing_table"}),
    ({"exception_kind": "other"}, {"exception_kind_allowed", "exception_reason_allowed"}),
    ({"exception_reason": "household_not_found"}, {"exception_reason_allowed"}),
    ({"candidate_citizens": 1}, {"candidate_citizens_consistent"}),
])
def test_identity_exceptions_checks(change, failed):
    row = {"source_name": "taxation", "dataset": "taxpayers", "record_key": "7912345678",
           "exception_kind": "identity", "exception_reason": "ambiguous_name_and_birth_date",
           "identifier_kind": "legacy_tax_code", "candidate_citizens": 2,
           "loaded_at": datetime(2025, 1, 2, tzinfo=UTC)}
    name = "shared.identity_exceptions"
    assert _failed_checks(name, pl.DataFrame([row | change], schema=get_contract(name).columns)) == failed


def test_data_quality_summary_checks():
    name = "shared.data_quality_summary"
    row = {"source_name": "education", "dataset": "enrolments", "current_rows": 10, "deleted_rows": 0,
           "quarantined_rows": 1, "identity_exceptions": 0, "reference_exceptions": 2, "linked_records": None,
           "last_loaded_at": datetime(2025, 1, 2, tzinfo=UTC)}
    schema = get_contract(name).columns
    assert _failed_checks(name, pl.DataFrame([row], schema=schema)) == set()
    bad = pl.DataFrame([row | {"deleted_rows": -1, "dataset": "nothing"}], schema=schema)
    assert _failed_checks(name, bad) == {"counts_not_negative", "dataset_is_landing_table"}
