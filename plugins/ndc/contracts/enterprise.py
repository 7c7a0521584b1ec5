"""Contracts of the national business registration database (MariaDB), version 1.

Identifiers: the 10-digit enterprise code (= the tax code: 9 digits and a check digit) keys enterprises; branch
codes are the parent's code, ``-`` and a 3-digit serial (``0101234567-001``); legal representatives are citizens
by their 12-digit PIN. Province codes are those in force on the row's date (Việt Nam time).
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

EARLIEST_REGISTRATION = date(1990, 1, 1)
UTC_TIMESTAMP = pl.Datetime("us", "UTC")
LEGAL_FORMS = ("tnhh", "co_phan", "tu_nhan", "hop_danh")
STATUSES = ("active", "suspended", "dissolved")
ROLES = ("giam_doc", "tong_giam_doc", "chu_tich")
# The enterprise code is the enterprise's tax code.
enterprise_code_is_valid = tax_code_is_valid


def branch_code_is_valid(code: pl.Expr) -> pl.Expr:
    """A valid enterprise code, ``-`` and a 3-digit serial."""
    return (code.str.contains(r"^\d{10}-\d{3}$") & enterprise_code_is_valid(code.str.slice(0, 10))).fill_null(False)


def _allowed(column: pl.Expr, values: tuple[str, ...]) -> pl.Expr:
    return column.is_in(list(values)).fill_null(False)


class Enterprises(NdcContract):
    """One row per registered enterprise (the source may hold older versions of a code: merged by key)."""

    enterprise_code: str = pa.Field(nullable=True, description="10-digit enterprise code = tax code")
    name: str = pa.Field(nullable=True)
    legal_form: str = pa.Field(nullable=True, description="tnhh, co_phan, tu_nhan or hop_danh")
    province_code: str = pa.Field(nullable=True, description="code in force on updated_at")
    address: str = pa.Field(nullable=True)
    registered_on: date = pa.Field(nullable=True)
    status: str = pa.Field(nullable=True, description="active, suspended or dissolved")
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "enterprise.enterprises"
        metadata = {"version": "1.1.0"}

    @pa.check("enterprise_code", name="enterprise_code_format")
    def _code(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(enterprise_code_is_valid(pl.col(data.key)))

    @pa.check("name", name="name_not_blank")
    def _name(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(not_blank(pl.col(data.key)))

    @pa.check("legal_form", name="legal_form_allowed")
    def _legal_form(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_allowed(pl.col(data.key), LEGAL_FORMS))

    @pa.check("status", name="status_allowed")
    def _status(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_allowed(pl.col(data.key), STATUSES))

    @pa.dataframe_check(name="registered_on_range")
    def _registered_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("registered_on"), EARLIEST_REGISTRATION, vietnam_date("updated_at")))

    @pa.dataframe_check(name="province_code_valid")
    def _province(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(province_valid_on(pl.col("province_code"), vietnam_date("updated_at")))


class Branches(NdcContract):
    """One row per branch; a closed branch keeps its row with ``deleted_at`` set (the tombstone)."""

    branch_code: str = pa.Field(nullable=True, description="parent's enterprise code, '-', 3-digit serial")
    enterprise_code: str = pa.Field(nullable=True)
    name: str = pa.Field(nullable=True)
    province_code: str = pa.Field(nullable=True, description="code in force on updated_at")
    address: str = pa.Field(nullable=True)
    opened_on: date = pa.Field(nullable=True)
    deleted_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=True)  # type: ignore[valid-type]
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "enterprise.branches"
        metadata = {"version": "1.1.0"}

    @pa.check("branch_code", name="branch_code_format")
    def _branch_code(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(branch_code_is_valid(pl.col(data.key)))

    @pa.check("enterprise_code", name="enterprise_code_format")
    def _code(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(enterprise_code_is_valid(pl.col(data.key)))

    @pa.check("name", name="name_not_blank")
    def _name(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(not_blank(pl.col(data.key)))

    @pa.dataframe_check(name="opened_on_range")
    def _opened_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("opened_on"), EARLIEST_REGISTRATION, vietnam_date("updated_at")))

    @pa.dataframe_check(name="province_code_valid")
    def _province(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(province_valid_on(pl.col("province_code"), vietnam_date("updated_at")))


class LegalRepresentatives(NdcContract):
    """One row per enterprise and legal representative (a citizen, by PIN)."""

    enterprise_code: str = pa.Field(nullable=True)
    pin: str = pa.Field(nullable=True, description="12-digit personal identification number")
    full_name: str = pa.Field(nullable=True)
    birth_date: date = pa.Field(nullable=True)
    role: str = pa.Field(nullable=True, description="giam_doc, tong_giam_doc or chu_tich")
    appointed_on: date = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "enterprise.legal_representatives"
        metadata = {"version": "1.1.0"}

    @pa.check("enterprise_code", name="enterprise_code_format")
    def _code(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(enterprise_code_is_valid(pl.col(data.key)))

    @pa.check("pin", name="pin_format")
    def _pin(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pin_is_well_formed(pl.col(data.key)))

    @pa.check("full_name", name="full_name_not_blank")
    def _full_name(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(not_blank(pl.col(data.key)))

    @pa.check("role", name="role_allowed")
    def _role(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_allowed(pl.col(data.key), ROLES))

    @pa.dataframe_check(name="appointed_on_range")
    def _appointed_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("appointed_on"), EARLIEST_REGISTRATION, vietnam_date("updated_at")))


class StatusHistory(NdcContract):
    """One row per change of an enterprise's registration status."""

    event_id: int = pa.Field(nullable=False)
    enterprise_code: str = pa.Field(nullable=True)
    status: str = pa.Field(nullable=True, description="active, suspended or dissolved")
    effective_on: date = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "enterprise.status_history"
        metadata = {"version": "1.1.0"}

    @pa.check("enterprise_code", name="enterprise_code_format")
    def _code(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(enterprise_code_is_valid(pl.col(data.key)))

    @pa.check("status", name="status_allowed")
    def _status(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_allowed(pl.col(data.key), STATUSES))

    @pa.dataframe_check(name="effective_on_range")
    def _effective_on(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            date_between(pl.col("effective_on"), EARLIEST_REGISTRATION, vietnam_date("updated_at")))


__all__ = ["Branches", "Enterprises", "LegalRepresentatives", "StatusHistory"]


CONTRACTS = (Enterprises, Branches, LegalRepresentatives, StatusHistory)
