"""Contracts of the shared views (``shared.<model>``), version 1: what gate 2 checks on a dbt build before publishing.

One model per shared dbt model, with exactly the dbt contract's columns in the same order; a column is
``nullable=False`` exactly where dbt declares a ``not_null`` constraint or a primary key (a test compares the two:
``ndc.contracts.compat.dbt_agreement``). Unlike a landing contract, nothing here is filtered or coerced
(``strict=True``, ``coerce=False``): dbt built these tables, so an extra, missing or retyped column is a defect.

Gate 2 (``ndc.conform.build_audit``) frames the rows psycopg reads with the contract's types, strictly (a value that
does not
fit fails ``value_type(<column>)``): text -> String, date -> Date, boolean -> Boolean, integer -> Int32, bigint ->
Int64, numeric -> Decimal(38, 0) (amounts in whole dong; a float would lose digits past 2^53), timestamp with time
zone -> Datetime("us", "UTC"). The unique key of each model is
``metadata["primary_key"]`` (checked across the whole table in SQL, not per batch).
"""

from __future__ import annotations

from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData
from pandera.typing.polars import Series

from ndc.contracts import checks
from ndc.contracts.base import SEXES, UTC_TIMESTAMP
from ndc.contracts.enterprise import LEGAL_FORMS, STATUSES, enterprise_code_format
from ndc.reference import current_code_of, new_codes, old_codes

AMOUNT_VND = pl.Decimal(38, 0)
FIRST_STATISTICS_MONTH = date(2024, 7, 1)
IDENTITY_REASONS = ("pin_not_found", "pin_birth_date_mismatch", "no_name_or_birth_date",
                    "no_citizen_with_name_and_birth_date", "ambiguous_name_and_birth_date")
EXCEPTION_KINDS = ("identity", "reference")


class SharedContract(pa.DataFrameModel):
    """Base of every shared view's contract: exactly the built columns, in order, with exactly their types."""

    class Config:
        strict = True
        coerce = False
        ordered = True
        metadata = {"version": "1.0.0"}


# A null passes the shared views' value checks: nullability is the column's own rule (``nullable``).

def historic_province_code_valid() -> classmethod:
    """Check ``historic_province_code_valid``: one of the 63 codes in force until 2025-06-30."""
    return checks.column_check("historic_province_code", "historic_province_code_valid",
                        lambda code: checks.is_one_of(code, old_codes()), nulls_pass=True)


def current_province_code_valid() -> classmethod:
    """Check ``current_province_code_valid``: one of the 34 codes in force from 2025-07-01."""
    return checks.column_check("current_province_code", "current_province_code_valid",
                        lambda code: checks.is_one_of(code, new_codes()), nulls_pass=True)


def current_province_matches_historic() -> classmethod:
    """Check ``current_province_matches_historic``: the current (2025) province is the one the historic code
    merged into (Resolution 202/2025/QH15)."""

    def agree() -> pl.Expr:
        mapped = pl.col("historic_province_code").replace_strict(current_code_of(), default=None,
                                                                 return_dtype=pl.String)
        return (mapped == pl.col("current_province_code")).fill_null(False)

    return checks.row_check("current_province_matches_historic", agree)


def counts_not_negative(*columns: str) -> classmethod:
    """Check ``counts_not_negative``: none of ``columns`` is below zero."""
    return checks.row_check("counts_not_negative",
                     lambda: pl.all_horizontal((pl.col(c).is_null() | (pl.col(c) >= 0)) for c in columns))


def dataset_is_landing_table() -> classmethod:
    """Check ``dataset_is_landing_table``: ``<source_name>.<dataset>`` names a landing table's contract."""

    def landing_table() -> pl.Expr:
        from ndc.contracts import all_contracts

        landing = sorted({c.name for c in all_contracts() if c.kind == "landing"})
        return pl.concat_str(pl.col("source_name"), pl.lit("."), pl.col("dataset")).is_in(landing).fill_null(False)

    return checks.row_check("dataset_is_landing_table", landing_table)


class Citizens(SharedContract):
    """shared.citizens: one row per citizen of the population database, linked to the other databases."""

    citizen_id: str = pa.Field(nullable=False, description="12-digit PIN")
    full_name: str = pa.Field(nullable=True)
    birth_date: date = pa.Field(nullable=False)
    death_date: date = pa.Field(nullable=True)
    sex: str = pa.Field(nullable=False, description="M or F")
    ethnicity: str = pa.Field(nullable=True)
    household_id: str = pa.Field(nullable=True)
    has_registered_household: bool = pa.Field(nullable=False)
    historic_province_code: str = pa.Field(nullable=False)
    historic_province_name: str = pa.Field(nullable=True)
    current_province_code: str = pa.Field(nullable=False)
    current_province_name: str = pa.Field(nullable=False)
    residence_recorded_on: date = pa.Field(nullable=True)
    is_tax_registered: bool = pa.Field(nullable=False)
    tax_filings: int = pa.Field(nullable=False)
    last_tax_filed_on: date = pa.Field(nullable=True)
    is_insured: bool = pa.Field(nullable=False)
    contributing_months: int = pa.Field(nullable=False)
    highest_enrolled_grade: int = pa.Field(nullable=True)
    highest_enrolled_school_year: str = pa.Field(nullable=True)
    source_updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "shared.citizens"
        metadata = {"version": "1.0.0", "primary_key": ["citizen_id"], "dbt_model": "citizens"}

    _citizen_id = checks.pin_format("citizen_id", name="citizen_id_format")
    _sex = checks.allowed("sex", SEXES, nulls_pass=True)
    _historic = historic_province_code_valid()
    _current = current_province_code_valid()
    _grade = checks.column_check("highest_enrolled_grade", "grade_range", lambda grade: grade.is_between(0, 12),
                          nulls_pass=True)
    _pin_birth = checks.pin_birth_consistency("citizen_id")
    _provinces_agree = current_province_matches_historic()
    _counts = counts_not_negative("tax_filings", "contributing_months")

    @pa.check("highest_enrolled_school_year", name="school_year_format")
    def _school_year(cls, data: PolarsData) -> pl.LazyFrame:
        year = pl.col(data.key)
        start = year.str.slice(0, 4).cast(pl.Int32, strict=False)
        end = year.str.slice(5, 4).cast(pl.Int32, strict=False)
        return data.lazyframe.select(year.is_null() | (year.str.contains(r"^\d{4}-\d{4}$") & (end == start + 1))
                                     .fill_null(False))

    @pa.dataframe_check(name="death_after_birth")
    def _death(cls, data: PolarsData) -> pl.LazyFrame:
        death = pl.col("death_date")
        return data.lazyframe.select((death.is_null() | (death >= pl.col("birth_date")).fill_null(False))
                                     .alias("ok"))


class Enterprises(SharedContract):
    """shared.enterprises: one row per registered enterprise, with its status, branches, taxes and employees."""

    enterprise_code: str = pa.Field(nullable=False, description="10-digit enterprise code = tax code")
    enterprise_name: str = pa.Field(nullable=False)
    legal_form: str = pa.Field(nullable=True)
    registered_on: date = pa.Field(nullable=True)
    status: str = pa.Field(nullable=False)
    status_events: int = pa.Field(nullable=False)
    last_status_change_on: date = pa.Field(nullable=True)
    dissolved_on: date = pa.Field(nullable=True)
    open_branches: int = pa.Field(nullable=False)
    historic_province_code: str = pa.Field(nullable=False)
    historic_province_name: str = pa.Field(nullable=True)
    current_province_code: str = pa.Field(nullable=False)
    current_province_name: str = pa.Field(nullable=False)
    tax_filings: int = pa.Field(nullable=False)
    last_tax_filed_on: date = pa.Field(nullable=True)
    tax_declared_vnd: Series[AMOUNT_VND] = pa.Field(nullable=False)  # type: ignore[valid-type]
    tax_paid_vnd: Series[AMOUNT_VND] = pa.Field(nullable=False)  # type: ignore[valid-type]
    tax_arrears_vnd: Series[AMOUNT_VND] = pa.Field(nullable=False)  # type: ignore[valid-type]
    insured_employees: int = pa.Field(nullable=False)
    source_updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "shared.enterprises"
        metadata = {"version": "1.0.0", "primary_key": ["enterprise_code"], "dbt_model": "enterprises"}

    _code = enterprise_code_format()
    _name = checks.not_blank("enterprise_name")
    _legal_form = checks.allowed("legal_form", LEGAL_FORMS, nulls_pass=True)
    _status = checks.allowed("status", STATUSES, nulls_pass=True)
    _historic = historic_province_code_valid()
    _current = current_province_code_valid()
    _provinces_agree = current_province_matches_historic()
    _counts = counts_not_negative("status_events", "open_branches", "tax_filings", "insured_employees",
                                  "tax_declared_vnd", "tax_paid_vnd")

    @pa.dataframe_check(name="tax_arrears_consistent")
    def _arrears(cls, data: PolarsData) -> pl.LazyFrame:
        owed = pl.col("tax_declared_vnd") - pl.col("tax_paid_vnd")
        expected = pl.when(owed > 0).then(owed).otherwise(0)
        return data.lazyframe.select((pl.col("tax_arrears_vnd") == expected).fill_null(False).alias("ok"))


class ProvinceStatistics(SharedContract):
    """shared.province_statistics: per current province (34) and month, every figure by today's province."""

    current_province_code: str = pa.Field(nullable=False)
    current_province_name: str = pa.Field(nullable=False)
    month: date = pa.Field(nullable=False, description="first day of the month")
    population: int = pa.Field(nullable=False)
    births: int = pa.Field(nullable=False)
    deaths: int = pa.Field(nullable=False)
    moves_in: int = pa.Field(nullable=False)
    moves_out: int = pa.Field(nullable=False)
    enterprises_opened: int = pa.Field(nullable=False)
    enterprises_closed: int = pa.Field(nullable=False)
    taxpayers_registered: int = pa.Field(nullable=False)
    insured_workers: int = pa.Field(nullable=False)
    students: int = pa.Field(nullable=False)

    class Config:
        name = "shared.province_statistics"
        metadata = {"version": "1.0.0", "primary_key": ["current_province_code", "month"],
                    "dbt_model": "province_statistics"}

    _current = current_province_code_valid()
    _counts = counts_not_negative("population", "births", "deaths", "moves_in", "moves_out", "enterprises_opened",
                                  "enterprises_closed", "taxpayers_registered", "insured_workers", "students")

    @pa.check("month", name="month_first_day")
    def _month(cls, data: PolarsData) -> pl.LazyFrame:
        month = pl.col(data.key)
        return data.lazyframe.select(((month.dt.day() == 1) & (month >= pl.lit(FIRST_STATISTICS_MONTH)))
                                     .fill_null(False))


class IdentityExceptions(SharedContract):
    """shared.identity_exceptions: every record the conformance layer could not link, with the reason."""

    source_name: str = pa.Field(nullable=False)
    dataset: str = pa.Field(nullable=False)
    record_key: str = pa.Field(nullable=False)
    exception_kind: str = pa.Field(nullable=False, description="identity or reference")
    exception_reason: str = pa.Field(nullable=False)
    identifier_kind: str = pa.Field(nullable=False)
    candidate_citizens: int = pa.Field(nullable=False)
    loaded_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "shared.identity_exceptions"
        metadata = {"version": "1.0.0",
                    "primary_key": ["source_name", "dataset", "record_key", "exception_reason"],
                    "dbt_model": "identity_exceptions"}

    _record_key = checks.not_blank("record_key")
    _kind = checks.allowed("exception_kind", EXCEPTION_KINDS, nulls_pass=True)
    _dataset = dataset_is_landing_table()

    @pa.dataframe_check(name="exception_reason_allowed")
    def _reason(cls, data: PolarsData) -> pl.LazyFrame:
        reason, kind = pl.col("exception_reason"), pl.col("exception_kind")
        identity = (kind == "identity") & reason.is_in(list(IDENTITY_REASONS))
        reference = (kind == "reference") & reason.str.contains(r"^[a-z_]+_not_found$")
        return data.lazyframe.select((identity | reference).fill_null(False).alias("ok"))

    @pa.dataframe_check(name="candidate_citizens_consistent")
    def _candidates(cls, data: PolarsData) -> pl.LazyFrame:
        candidates, reason = pl.col("candidate_citizens"), pl.col("exception_reason")
        ok = (pl.when(reason == "ambiguous_name_and_birth_date").then(candidates > 1)
              .when(reason == "no_citizen_with_name_and_birth_date").then(candidates == 0)
              .when(pl.col("exception_kind") == "reference").then(candidates == 0)
              .otherwise(candidates >= 0))
        return data.lazyframe.select(ok.fill_null(False).alias("ok"))


class DataQualitySummary(SharedContract):
    """shared.data_quality_summary: per landing table, rows current, deleted, quarantined, excepted and linked."""

    source_name: str = pa.Field(nullable=False)
    dataset: str = pa.Field(nullable=False)
    current_rows: int = pa.Field(nullable=False)
    deleted_rows: int = pa.Field(nullable=False)
    quarantined_rows: int = pa.Field(nullable=False)
    identity_exceptions: int = pa.Field(nullable=False)
    reference_exceptions: int = pa.Field(nullable=False)
    linked_records: int = pa.Field(nullable=True, description="null where the dataset holds no person records")
    last_loaded_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=True)  # type: ignore[valid-type]

    class Config:
        name = "shared.data_quality_summary"
        metadata = {"version": "1.0.0", "primary_key": ["source_name", "dataset"],
                    "dbt_model": "data_quality_summary"}

    _dataset = dataset_is_landing_table()
    _counts = counts_not_negative("current_rows", "deleted_rows", "quarantined_rows", "identity_exceptions",
                                  "reference_exceptions", "linked_records")


__all__ = ["Citizens", "DataQualitySummary", "Enterprises", "IdentityExceptions", "ProvinceStatistics",
           "SharedContract"]


CONTRACTS = (Citizens, Enterprises, ProvinceStatistics, IdentityExceptions, DataQualitySummary)
