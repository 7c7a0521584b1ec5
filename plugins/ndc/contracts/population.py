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

from ndc.contracts.base import (
    NdcContract,
    date_between,
    not_blank,
    pin_is_well_formed,
    pin_matches_birth,
    province_valid_on,
    vietnam_date,
)

EARLIEST_BIRTH = date(1900, 1, 1)
EARLIEST_MOVE = date(1990, 1, 1)
UTC_TIMESTAMP = pl.Datetime("us", "UTC")


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

    @pa.check("pin", name="pin_format")
    def _pin_format(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pin_is_well_formed(pl.col(data.key)))

    @pa.check("cmnd", name="cmnd_format")
    def _cmnd_format(cls, data: PolarsData) -> pl.LazyFrame:
        column = pl.col(data.key)
        return data.lazyframe.select(column.is_null() | column.str.contains(r"^\d{9}$").fill_null(False))

    @pa.check("full_name", name="full_name_not_blank")
    def _full_name(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(not_blank(pl.col(data.key)))

    @pa.check("sex", name="sex_allowed")
    def _sex(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(["M", "F"]).fill_null(False))

    @pa.dataframe_check(name="birth_date_range")
    def _birth_date(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("birth_date"), EARLIEST_BIRTH, vietnam_date("updated_at")))

    @pa.dataframe_check(name="death_after_birth")
    def _death_date(cls, data: PolarsData) -> pl.LazyFrame:
        death = pl.col("death_date")
        valid = (death >= pl.col("birth_date")) & (death <= vietnam_date("updated_at"))
        return data.lazyframe.select((death.is_null() | valid.fill_null(True)).alias("ok"))

    @pa.dataframe_check(name="pin_birth_consistency")
    def _pin_birth(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pin_matches_birth(pl.col("pin"), pl.col("birth_date"), pl.col("sex")))

    @pa.dataframe_check(name="province_code_valid")
    def _province(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(province_valid_on(pl.col("province_code"), vietnam_date("updated_at")))


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

    @pa.check("household_id", name="household_id_format")
    def _household_id(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).str.contains(r"^HK\d{10}$").fill_null(False))

    @pa.check("head_pin", name="pin_format")
    def _head_pin(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pin_is_well_formed(pl.col(data.key)))

    @pa.dataframe_check(name="province_code_valid")
    def _province(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(province_valid_on(pl.col("province_code"), vietnam_date("updated_at")))


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

    @pa.check("pin", name="pin_format")
    def _pin(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pin_is_well_formed(pl.col(data.key)))

    @pa.dataframe_check(name="moved_on_range")
    def _moved_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("moved_on"), EARLIEST_MOVE, vietnam_date("updated_at")))

    @pa.dataframe_check(name="province_code_valid")
    def _provinces(cls, data: PolarsData) -> pl.LazyFrame:
        on = pl.col("moved_on")
        valid = province_valid_on(pl.col("from_province_code"), on) & province_valid_on(
            pl.col("to_province_code"), on)
        return data.lazyframe.select(pl.col("moved_on").is_null() | valid)


__all__ = ["Citizens", "Households", "ResidenceChanges"]


CONTRACTS = (Citizens, Households, ResidenceChanges)
