"""Conventions shared by every contract: the base model (new source columns filtered, text without control
characters and of a sane length), and the types and values contracts declare columns with.

A contract is a pandera (polars backend) ``DataFrameModel``. Text columns are declared nullable and their own checks
decide about nulls, so one defect fails exactly one named check (the checks: :mod:`ndc.contracts.checks`).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData

VIETNAM_TZ = "Asia/Ho_Chi_Minh"
UTC_TIMESTAMP = pl.Datetime("us", "UTC")
PIN_PATTERN = r"^\d{12}$"
SEXES = ("M", "F")
# C0 and C1 control characters (tab, line ends and NUL included) and DEL: never part of a name, code or address;
# they come from broken exports, mojibake or terminal escapes, and break consumers' CSVs and screens.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f]"
# Longer text is not a record of a person, place or enterprise (the bad-input corpus sends a 10 MB address).
MAX_TEXT_CHARS = 2_000


class NdcContract(pa.DataFrameModel):
    """Base of every contract: new source columns are filtered (drift is reported before validation)."""

    class Config:
        strict = "filter"
        coerce = True
        metadata = {"version": "1.1.0"}

    # Checks inherited by several models: pandera keeps the given name for the first model built only and falls back
    # to the method's name for the others, so the methods carry the check names themselves.
    @pa.dataframe_check(name="text_without_control_characters")
    def text_without_control_characters(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_every_text(data, lambda c: ~c.str.contains(CONTROL_CHARACTERS)))

    @pa.dataframe_check(name="text_length")
    def text_length(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_every_text(data, lambda c: c.str.len_chars() <= MAX_TEXT_CHARS))


def _every_text(data: PolarsData, holds) -> pl.Expr:
    """True where ``holds`` is true of every non-null text value of the row (True for a frame without text)."""
    text = [name for name, dtype in data.lazyframe.collect_schema().items() if dtype == pl.String]
    return pl.all_horizontal(pl.lit(True), *(holds(pl.col(c)).fill_null(True) for c in text)).alias("ok")
