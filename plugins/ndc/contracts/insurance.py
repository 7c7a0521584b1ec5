"""Contracts of Vietnam Social Security's database (Bảo hiểm xã hội Việt Nam), version 1, read through its REST API.

Identifiers: the 10-digit social insurance code (2-digit code of the issuing province + 8 digits) keys insured
people; from 2025-08-01 (Việt Nam date) records also carry the citizen's 12-digit PIN, which then replaces the
insurance code as the national identifier. Employers are keyed by their 10-digit enterprise code (= tax code).
Province codes are those in force on the record's date (Việt Nam time).
"""

from __future__ import annotations

from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData
from pandera.typing.polars import Series

from ndc.contracts import checks
from ndc.contracts.base import SEXES, UTC_TIMESTAMP, NdcContract
from ndc.reference import old_codes

EARLIEST_BIRTH = date(1900, 1, 1)
EARLIEST_MONTH = date(1995, 1, 1)  # Vietnam Social Security was founded in 1995
PIN_REQUIRED_FROM = date(2025, 8, 1)
# An employer's enterprise code: 10 digits (its check digit is not checked here).
EMPLOYER_CODE_PATTERN = r"^\d{10}$"


def insurance_code_is_well_formed(code: pl.Expr) -> pl.Expr:
    """10 digits whose first two are a province code (the issuing province; codes are never reused)."""
    return (code.str.contains(r"^\d{10}$") & code.str.slice(0, 2).is_in(list(old_codes()))).fill_null(False)


def insurance_code_format() -> classmethod:
    """Check ``insurance_code_format`` (:func:`insurance_code_is_well_formed`); a null fails."""
    return checks.column_check("insurance_code", "insurance_code_format", insurance_code_is_well_formed)


class InsuredPeople(NdcContract):
    """One row per insured person (người tham gia BHXH)."""

    insurance_code: str = pa.Field(nullable=True, description="10-digit social insurance code (mã số BHXH)")
    pin: str = pa.Field(nullable=True, description="12-digit PIN; required on records updated from 2025-08-01")
    full_name: str = pa.Field(nullable=True)
    birth_date: date = pa.Field(nullable=True)
    sex: str = pa.Field(nullable=True, description="M or F")
    province_code: str = pa.Field(nullable=True, description="residence, code in force on updated_at")
    employer_code: str = pa.Field(nullable=True, description="enterprise code; null for voluntary contributors")
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "insurance.insured_people"
        metadata = {"version": "1.1.0"}

    _insurance_code = insurance_code_format()
    _pin_format = checks.pin_format("pin", nulls_pass=True)
    _full_name = checks.not_blank("full_name")
    _sex = checks.allowed("sex", SEXES)
    _employer_code = checks.format_matches("employer_code", EMPLOYER_CODE_PATTERN, nulls_pass=True)
    _birth_date = checks.date_in_range("birth_date", EARLIEST_BIRTH, until="updated_at")
    _province = checks.province_code_valid(on="updated_at")

    @pa.dataframe_check(name="pin_required_from_2025_08")
    def _pin_required(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("pin").is_not_null() | (checks.vietnam_date("updated_at") < pl.lit(PIN_REQUIRED_FROM))).alias("ok"))

    @pa.dataframe_check(name="pin_birth_consistency")
    def _pin_birth(cls, data: PolarsData) -> pl.LazyFrame:
        """The PIN agrees with birth date and sex; rows whose birth date is out of range are left to that check."""
        in_range = checks.date_between(pl.col("birth_date"), EARLIEST_BIRTH, checks.vietnam_date("updated_at"))
        agrees = checks.pin_matches_birth(pl.col("pin"), pl.col("birth_date"), pl.col("sex"))
        return data.lazyframe.select((~in_range | agrees).alias("ok"))


class Employers(NdcContract):
    """One row per employer registered with Vietnam Social Security (an enterprise of the business register)."""

    employer_code: str = pa.Field(nullable=True, description="10-digit enterprise code (= tax code)")
    name: str = pa.Field(nullable=True)
    province_code: str = pa.Field(nullable=True, description="code in force on updated_at")
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "insurance.employers"
        metadata = {"version": "1.1.0"}

    _employer_code = checks.format_matches("employer_code", EMPLOYER_CODE_PATTERN)
    _name = checks.not_blank("name")
    _province = checks.province_code_valid(on="updated_at")


class Contributions(NdcContract):
    """One row per monthly contribution; a cancelled one keeps its row with ``deleted_at`` set (the tombstone)."""

    contribution_id: int = pa.Field(nullable=False)
    insurance_code: str = pa.Field(nullable=True)
    employer_code: str = pa.Field(nullable=True, description="null for voluntary contributions")
    contribution_month: date = pa.Field(nullable=True, description="first day of the month paid for")
    amount: float = pa.Field(nullable=True, description="VND")
    deleted_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=True)  # type: ignore[valid-type]
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "insurance.contributions"
        metadata = {"version": "1.1.0"}

    _insurance_code = insurance_code_format()
    _employer_code = checks.format_matches("employer_code", EMPLOYER_CODE_PATTERN, nulls_pass=True)
    _amount = checks.positive("amount")

    @pa.dataframe_check(name="contribution_month_range")
    def _month(cls, data: PolarsData) -> pl.LazyFrame:
        month = pl.col("contribution_month")
        first_day = (month.dt.day() == 1).fill_null(False)
        return data.lazyframe.select(
            (first_day & checks.date_between(month, EARLIEST_MONTH, checks.vietnam_date("updated_at"))).alias("ok"))

    @pa.dataframe_check(name="deleted_at_not_after_update")
    def _deleted_at(cls, data: PolarsData) -> pl.LazyFrame:
        deleted = pl.col("deleted_at")
        return data.lazyframe.select((deleted.is_null() | (deleted <= pl.col("updated_at"))).alias("ok"))


__all__ = ["Contributions", "Employers", "InsuredPeople"]


CONTRACTS = (InsuredPeople, Employers, Contributions)
