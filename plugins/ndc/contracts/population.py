"""Contracts of the National Population Database (Ministry of Public Security), version 1.

Identifiers: the 12-digit personal identification number (PIN) keys citizens; legacy 9-digit ID card numbers
(CMND) survive on older records. Province codes are those in force on the record's date (Việt Nam time).
"""

from __future__ import annotations

from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData
from pandera.typing.polars import Series

from ndc.contracts import checks
from ndc.contracts.base import SEXES, UTC_TIMESTAMP, NdcContract

EARLIEST_BIRTH = date(1900, 1, 1)
EARLIEST_MOVE = date(1990, 1, 1)


class Citizens(NdcContract):
    """One row per citizen as the population database holds it."""

    pin: str = pa.Field(nullable=True, description="12-digit personal identification number")
    cmnd: str = pa.Field(nullable=True, description="legacy 9-digit ID card number")
    full_name: str = pa.Field(nullable=True)
    birth_date: date = pa.Field(nullable=True)
    death_date: date = pa.Field(nullable=True)
    sex: str = pa.Field(nullable=True, description="M or F")
    ethnicity: str = pa.Field(nullable=True)
    household_id: str = pa.Field(nullable=True)
    province_code: str = pa.Field(nullable=True, description="residence, code in force on updated_at")
    ward: str = pa.Field(nullable=True)
    address: str = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "population.citizens"
        metadata = {"version": "1.1.0"}

    _pin_format = checks.pin_format("pin")
    _cmnd_format = checks.format_matches("cmnd", r"^\d{9}$", nulls_pass=True)
    _full_name = checks.not_blank("full_name")
    _sex = checks.allowed("sex", SEXES)
    _birth_date = checks.date_in_range("birth_date", EARLIEST_BIRTH, until="updated_at")
    _pin_birth = checks.pin_birth_consistency("pin")
    _province = checks.province_code_valid(on="updated_at")

    @pa.dataframe_check(name="death_after_birth")
    def _death_date(cls, data: PolarsData) -> pl.LazyFrame:
        death = pl.col("death_date")
        valid = (death >= pl.col("birth_date")) & (death <= checks.vietnam_date("updated_at"))
        return data.lazyframe.select((death.is_null() | valid.fill_null(True)).alias("ok"))


class Households(NdcContract):
    """One row per registered household (sổ hộ khẩu)."""

    household_id: str = pa.Field(nullable=True)
    head_pin: str = pa.Field(nullable=True)
    province_code: str = pa.Field(nullable=True)
    ward: str = pa.Field(nullable=True)
    address: str = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "population.households"
        metadata = {"version": "1.1.0"}

    _household_id = checks.format_matches("household_id", r"^HK\d{10}$")
    _head_pin = checks.pin_format("head_pin")
    _province = checks.province_code_valid(on="updated_at")


class ResidenceChanges(NdcContract):
    """One row per registered change of permanent residence."""

    change_id: int = pa.Field(nullable=False)
    pin: str = pa.Field(nullable=True)
    from_province_code: str = pa.Field(nullable=True)
    to_province_code: str = pa.Field(nullable=True)
    moved_on: date = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "population.residence_changes"
        metadata = {"version": "1.1.0"}

    _pin = checks.pin_format("pin")
    _moved_on = checks.date_in_range("moved_on", EARLIEST_MOVE, until="updated_at")

    @pa.dataframe_check(name="province_code_valid")
    def _provinces(cls, data: PolarsData) -> pl.LazyFrame:
        on = pl.col("moved_on")
        valid = checks.province_valid_on(pl.col("from_province_code"), on) & checks.province_valid_on(
            pl.col("to_province_code"), on)
        return data.lazyframe.select(pl.col("moved_on").is_null() | valid)


__all__ = ["Citizens", "Households", "ResidenceChanges"]


CONTRACTS = (Citizens, Households, ResidenceChanges)
