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

from ndc.contracts import checks
from ndc.contracts.base import UTC_TIMESTAMP, NdcContract
from ndc.reference import REORGANISATION_DATE

TAXPAYER_KINDS = ("individual", "enterprise")
FORM_CODES = ("01/GTGT", "03/TNDN", "02/KK-TNCN")
TAX_PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2]|Q[1-4])$"
EARLIEST_BIRTH = date(1900, 1, 1)
EARLIEST_REGISTRATION = date(1990, 1, 1)
EARLIEST_ACTIVITY = date(1990, 1, 1)


def taxpayer_id_is_valid(taxpayer_id: pl.Expr, kind: pl.Expr | None = None) -> pl.Expr:
    """A valid tax code, or (for anyone but an enterprise) a well-formed 12-digit PIN."""
    not_enterprise = pl.lit(True) if kind is None else kind.fill_null("") != "enterprise"
    valid = checks.tax_code_is_valid(taxpayer_id) | (checks.pin_is_well_formed(taxpayer_id) & not_enterprise)
    return valid.fill_null(False)


def taxpayer_id_format() -> classmethod:
    """Check ``taxpayer_id_format`` of a table without the taxpayer's kind: a tax code or a PIN."""
    return checks.column_check("taxpayer_id", "taxpayer_id_format", taxpayer_id_is_valid)


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

    _kind = checks.allowed("taxpayer_kind", TAXPAYER_KINDS)
    _pin = checks.pin_format("pin", nulls_pass=True)
    _legacy = checks.column_check("legacy_tax_code", "legacy_tax_code_format", checks.tax_code_is_valid,
                                  nulls_pass=True)
    _full_name = checks.not_blank("full_name")
    _birth_date = checks.date_in_range("birth_date", EARLIEST_BIRTH, until="updated_at", nulls_pass=True)
    _registered_on = checks.date_in_range("registered_on", EARLIEST_REGISTRATION, until="updated_at")
    _province = checks.province_code_valid(on="updated_at")

    @pa.dataframe_check(name="taxpayer_id_format")
    def _taxpayer_id(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(taxpayer_id_is_valid(pl.col("taxpayer_id"), pl.col("taxpayer_kind")))

    @pa.dataframe_check(name="taxpayer_id_in_force")
    def _in_force(cls, data: PolarsData) -> pl.LazyFrame:
        """An individual is keyed by the legacy code before 2025-07-01 and by the PIN from that day."""
        taxpayer_id = pl.col("taxpayer_id")
        applicable = (pl.col("taxpayer_kind") == "individual").fill_null(False) & taxpayer_id_is_valid(taxpayer_id)
        pin_form = taxpayer_id.str.len_chars() == 12
        after = checks.vietnam_date("updated_at") >= pl.lit(REORGANISATION_DATE)
        return data.lazyframe.select((~applicable | (pin_form == after)).fill_null(True).alias("ok"))


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

    _taxpayer_id = taxpayer_id_format()
    _tax_period = checks.format_matches("tax_period", TAX_PERIOD_PATTERN)
    _form_code = checks.allowed("form_code", FORM_CODES)
    _filed_on = checks.date_in_range("filed_on", EARLIEST_ACTIVITY, until="updated_at")
    _declared_amount = checks.column_check("declared_amount", "declared_amount_non_negative",
                                    lambda c: (c >= 0).fill_null(False))


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

    _taxpayer_id = taxpayer_id_format()
    _paid_on = checks.date_in_range("paid_on", EARLIEST_ACTIVITY, until="updated_at")
    _amount = checks.positive("amount")


__all__ = ["Filings", "Payments", "Taxpayers", "taxpayer_id_is_valid"]


CONTRACTS = (Taxpayers, Filings, Payments)
