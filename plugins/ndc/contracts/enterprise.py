"""Contracts of the national business registration database (MariaDB), version 1.

Identifiers: the 10-digit enterprise code (= the tax code: 9 digits and a check digit) keys enterprises; branch
codes are the parent's code, ``-`` and a 3-digit serial (``0101234567-001``); legal representatives are citizens
by their 12-digit PIN. Province codes are those in force on the row's date (Việt Nam time).
"""

from __future__ import annotations

from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.typing.polars import Series

from ndc.contracts import checks
from ndc.contracts.base import UTC_TIMESTAMP, NdcContract

EARLIEST_REGISTRATION = date(1990, 1, 1)
LEGAL_FORMS = ("tnhh", "co_phan", "tu_nhan", "hop_danh")
STATUSES = ("active", "suspended", "dissolved")
ROLES = ("giam_doc", "tong_giam_doc", "chu_tich")
# The enterprise code is the enterprise's tax code.
enterprise_code_is_valid = checks.tax_code_is_valid


def branch_code_is_valid(code: pl.Expr) -> pl.Expr:
    """A valid enterprise code, ``-`` and a 3-digit serial."""
    return (code.str.contains(r"^\d{10}-\d{3}$") & enterprise_code_is_valid(code.str.slice(0, 10))).fill_null(False)


def enterprise_code_format(column: str = "enterprise_code") -> classmethod:
    """Check ``enterprise_code_format``: a valid enterprise code; a null fails."""
    return checks.column_check(column, "enterprise_code_format", enterprise_code_is_valid)


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

    _code = enterprise_code_format()
    _name = checks.not_blank("name")
    _legal_form = checks.allowed("legal_form", LEGAL_FORMS)
    _status = checks.allowed("status", STATUSES)
    _registered_on = checks.date_in_range("registered_on", EARLIEST_REGISTRATION, until="updated_at")
    _province = checks.province_code_valid(on="updated_at")


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

    _branch_code = checks.column_check("branch_code", "branch_code_format", branch_code_is_valid)
    _code = enterprise_code_format()
    _name = checks.not_blank("name")
    _opened_on = checks.date_in_range("opened_on", EARLIEST_REGISTRATION, until="updated_at")
    _province = checks.province_code_valid(on="updated_at")


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

    _code = enterprise_code_format()
    _pin = checks.pin_format("pin")
    _full_name = checks.not_blank("full_name")
    _role = checks.allowed("role", ROLES)
    _appointed_on = checks.date_in_range("appointed_on", EARLIEST_REGISTRATION, until="updated_at")


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

    _code = enterprise_code_format()
    _status = checks.allowed("status", STATUSES)
    _effective_on = checks.date_in_range("effective_on", EARLIEST_REGISTRATION, until="updated_at")


__all__ = ["Branches", "Enterprises", "LegalRepresentatives", "StatusHistory"]


CONTRACTS = (Enterprises, Branches, LegalRepresentatives, StatusHistory)
