"""Contracts of the taxpayer database of the General Department of Taxation (Ministry of Finance), version 1.

Identifiers: enterprises by their 10-digit tax code (the tenth digit a check digit of the first nine);
individuals by a legacy 10-digit personal tax code on records dated before 2025-07-01 (Việt Nam date) and by
their 12-digit PIN from that day. Province codes are the tax office's code in force on the record's date.
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
    province_valid_on,
    tax_code_is_valid,
    vietnam_date,
)
from ndc.reference import REORGANISATION_DATE

TAXPAYER_KINDS = ("individual", "enterprise")
FORM_CODES = ("01/GTGT", "03/TNDN", "02/KK-TNCN")
TAX_PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2]|Q[1-4])$"
EARLIEST_BIRTH = date(1900, 1, 1)
EARLIEST_REGISTRATION = date(1990, 1, 1)
EARLIEST_ACTIVITY = date(1990, 1, 1)
UTC_TIMESTAMP = pl.Datetime("us", "UTC")


def taxpayer_id_is_valid(taxpayer_id: pl.Expr, kind: pl.Expr | None = None) -> pl.Expr:
    """A valid tax code, or (for anyone but an enterprise) a well-formed 12-digit PIN."""
    not_enterprise = pl.lit(True) if kind is None else kind.fill_null("") != "enterprise"
    return (tax_code_is_valid(taxpayer_id) | (pin_is_well_formed(taxpayer_id) & not_enterprise)).fill_null(False)


class Taxpayers(NdcContract):
    """One row per registered taxpayer (individual or enterprise)."""

    taxpayer_id: str = pa.Field(nullable=True, description="tax code (10 digits) or PIN (12 digits)")
    taxpayer_kind: str = pa.Field(nullable=True, description="individual or enterprise")
    pin: str = pa.Field(nullable=True, description="individuals migrated to the PIN")
    legacy_tax_code: str = pa.Field(nullable=True, description="personal tax code before 2025-07-01, kept")
    full_name: str = pa.Field(nullable=True, description="person or enterprise name")
    birth_date: date = pa.Field(nullable=True, description="individuals only")
    province_code: str = pa.Field(nullable=True, description="tax office, code in force on updated_at")
    registered_on: date = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "taxation.taxpayers"
        metadata = {"version": "1.1.0"}

    @pa.check("taxpayer_kind", name="taxpayer_kind_allowed")
    def _kind(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(TAXPAYER_KINDS).fill_null(False))

    @pa.dataframe_check(name="taxpayer_id_format")
    def _taxpayer_id(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(taxpayer_id_is_valid(pl.col("taxpayer_id"), pl.col("taxpayer_kind")))

    @pa.dataframe_check(name="taxpayer_id_in_force")
    def _in_force(cls, data: PolarsData) -> pl.LazyFrame:
        """An individual is keyed by the legacy code before 2025-07-01 and by the PIN from that day."""
        taxpayer_id = pl.col("taxpayer_id")
        applicable = (pl.col("taxpayer_kind") == "individual").fill_null(False) & taxpayer_id_is_valid(taxpayer_id)
        pin_form = taxpayer_id.str.len_chars() == 12
        after = vietnam_date("updated_at") >= pl.lit(REORGANISATION_DATE)
        return data.lazyframe.select((~applicable | (pin_form == after)).fill_null(True).alias("ok"))

    @pa.check("pin", name="pin_format")
    def _pin(cls, data: PolarsData) -> pl.LazyFrame:
        column = pl.col(data.key)
        return data.lazyframe.select(column.is_null() | pin_is_well_formed(column))

    @pa.check("legacy_tax_code", name="legacy_tax_code_format")
    def _legacy(cls, data: PolarsData) -> pl.LazyFrame:
        column = pl.col(data.key)
        return data.lazyframe.select(column.is_null() | tax_code_is_valid(column))

    @pa.check("full_name", name="full_name_not_blank")
    def _full_name(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(not_blank(pl.col(data.key)))

    @pa.dataframe_check(name="birth_date_range")
    def _birth_date(cls, data: PolarsData) -> pl.LazyFrame:
        birth = pl.col("birth_date")
        return data.lazyframe.select(
            (birth.is_null() | date_between(birth, EARLIEST_BIRTH, vietnam_date("updated_at"))).alias("ok"))

    @pa.dataframe_check(name="registered_on_range")
    def _registered_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("registered_on"), EARLIEST_REGISTRATION, vietnam_date("updated_at")))

    @pa.dataframe_check(name="province_code_valid")
    def _province(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(province_valid_on(pl.col("province_code"), vietnam_date("updated_at")))


class Filings(NdcContract):
    """One row per tax declaration (withdrawn filings are deleted at the source; the full compare finds them)."""

    filing_id: int = pa.Field(nullable=False)
    taxpayer_id: str = pa.Field(nullable=True)
    tax_period: str = pa.Field(nullable=True, description="YYYY-MM or YYYY-Qn")
    form_code: str = pa.Field(nullable=True, description="e.g. 01/GTGT, 03/TNDN, 02/KK-TNCN")
    filed_on: date = pa.Field(nullable=True)
    declared_amount: float = pa.Field(nullable=True, description="dong, zero for a nil return")
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "taxation.filings"
        metadata = {"version": "1.1.0"}

    @pa.check("taxpayer_id", name="taxpayer_id_format")
    def _taxpayer_id(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(taxpayer_id_is_valid(pl.col(data.key)))

    @pa.check("tax_period", name="tax_period_format")
    def _tax_period(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).str.contains(TAX_PERIOD_PATTERN).fill_null(False))

    @pa.check("form_code", name="form_code_allowed")
    def _form_code(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(FORM_CODES).fill_null(False))

    @pa.dataframe_check(name="filed_on_range")
    def _filed_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("filed_on"), EARLIEST_ACTIVITY, vietnam_date("updated_at")))

    @pa.check("declared_amount", name="declared_amount_non_negative")
    def _declared_amount(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col(data.key) >= 0).fill_null(False))


class Payments(NdcContract):
    """One row per tax payment."""

    payment_id: int = pa.Field(nullable=False)
    taxpayer_id: str = pa.Field(nullable=True)
    paid_on: date = pa.Field(nullable=True)
    amount: float = pa.Field(nullable=True, description="dong")
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "taxation.payments"
        metadata = {"version": "1.1.0"}

    @pa.check("taxpayer_id", name="taxpayer_id_format")
    def _taxpayer_id(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(taxpayer_id_is_valid(pl.col(data.key)))

    @pa.dataframe_check(name="paid_on_range")
    def _paid_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("paid_on"), EARLIEST_ACTIVITY, vietnam_date("updated_at")))

    @pa.check("amount", name="amount_positive")
    def _amount(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col(data.key) > 0).fill_null(False))


__all__ = ["Filings", "Payments", "Taxpayers", "tax_code_is_valid", "taxpayer_id_is_valid"]


CONTRACTS = (Taxpayers, Filings, Payments)
