"""The checks several contracts make, each defined once, and the expressions they are made of.

Every check carries a stable ``name``: that name is what quarantine records as the reason a row was rejected, and
what tests compare with the simulators' manifests. A check is a function that returns the ``@pa.check`` (one
column) or ``@pa.dataframe_check`` (whole rows) class method; a contract assigns it in its class body::

    _full_name = checks.not_blank("full_name")               # check full_name_not_blank
    _sex = checks.allowed("sex", SEXES)                      # check sex_allowed
    _province = checks.province_code_valid(on="updated_at")  # check province_code_valid

A check of one contract only is written as a ``@pa.check`` method, or with :func:`column_check` /
:func:`row_check` when it is one expression.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData

from ndc.contracts.base import PIN_PATTERN, VIETNAM_TZ
from ndc.reference import REORGANISATION_DATE, TAX_CODE_WEIGHTS, new_codes, old_codes


def vietnam_date(column: str) -> pl.Expr:
    """The Việt Nam calendar date of a UTC timestamp column (domain dates are Việt Nam dates)."""
    return pl.col(column).dt.convert_time_zone(VIETNAM_TZ).dt.date()


def province_valid_on(code: pl.Expr, on: pl.Expr) -> pl.Expr:
    """True where ``code`` is a province code in force on date ``on`` (63 codes before 2025-07-01, 34 after)."""
    before = code.is_in(list(old_codes()))
    after = code.is_in(list(new_codes()))
    return pl.when(on < pl.lit(REORGANISATION_DATE)).then(before).otherwise(after).fill_null(False)


def pin_is_well_formed(pin: pl.Expr) -> pl.Expr:
    """12 digits whose first three are a province-of-birth-registration code (0 + a province code)."""
    prefixes = [f"0{code}" for code in old_codes()]
    return (pin.str.contains(PIN_PATTERN) & pin.str.slice(0, 3).is_in(prefixes)).fill_null(False)


def pin_matches_birth(pin: pl.Expr, birth_date: pl.Expr, sex: pl.Expr) -> pl.Expr:
    """The PIN's century+sex digit and two year digits agree with the birth date and sex.

    Digit 4 is 0/1 for a man/woman born in the 1900s, 2/3 in the 2000s (4/5 in the 2100s); digits 5-6 are
    the year of birth. Rows whose PIN, birth date or sex are themselves invalid pass here: their own checks
    reject them, so each defect is reported once.
    """
    year = birth_date.dt.year()
    expected = (year // 100 - 19) * 2 + (sex == "F").cast(pl.Int32)
    digit = pin.str.slice(3, 1).cast(pl.Int32, strict=False)
    two_digits = pin.str.slice(4, 2).cast(pl.Int32, strict=False)
    applicable = pin_is_well_formed(pin) & birth_date.is_not_null() & sex.is_in(["M", "F"]).fill_null(False)
    return (~applicable | ((digit == expected) & (two_digits == year % 100))).fill_null(False)


def tax_code_is_valid(code: pl.Expr) -> pl.Expr:
    """10 digits whose tenth is the check digit of the first nine: ``10 - (weighted sum mod 11)``; a result of
    10 admits no valid code."""
    digits = [code.str.slice(i, 1).cast(pl.Int32, strict=False) for i in range(10)]
    expected = 10 - pl.sum_horizontal(d * w for d, w in zip(digits[:9], TAX_CODE_WEIGHTS, strict=True)) % 11
    return (code.str.contains(r"^\d{10}$") & (expected != 10) & (digits[9] == expected)).fill_null(False)


def is_not_blank(column: pl.Expr) -> pl.Expr:
    """Text other than whitespace (a null is blank)."""
    return (column.str.strip_chars().str.len_chars() > 0).fill_null(False)


def is_one_of(column: pl.Expr, values: Iterable[str]) -> pl.Expr:
    """One of ``values`` (a null is not)."""
    return column.is_in(list(values)).fill_null(False)


def matches(column: pl.Expr, pattern: str) -> pl.Expr:
    """``pattern`` is found in the text (a null does not match)."""
    return column.str.contains(pattern).fill_null(False)


def date_between(column: pl.Expr, earliest: date, latest: pl.Expr) -> pl.Expr:
    return ((column >= pl.lit(earliest)) & (column <= latest)).fill_null(False)


# --- checks shared by several contracts ---------------------------------------------------------------------------
# Each call makes a new class method, so every model owns its checks. The method's __name__ is the check's name
# too: pandera falls back to that name when a model inherits the check (see NdcContract).

def column_check(column: str, name: str, valid: Callable[[pl.Expr], pl.Expr], *,
                 nulls_pass: bool = False) -> classmethod:
    """Check ``name`` of ``column``: a row passes where ``valid(<the column>)`` is True, or (with ``nulls_pass``,
    for a column that may be left empty) where the column is null."""

    def check(cls, data: PolarsData) -> pl.LazyFrame:
        value = pl.col(data.key)
        return data.lazyframe.select((value.is_null() | valid(value)) if nulls_pass else valid(value))

    check.__name__ = check.__qualname__ = name
    return pa.check(column, name=name)(check)


def row_check(name: str, valid: Callable[[], pl.Expr]) -> classmethod:
    """Check ``name`` of whole rows: a row passes where ``valid()`` is True (built when the check runs)."""

    def check(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(valid())

    check.__name__ = check.__qualname__ = name
    return pa.dataframe_check(name=name)(check)


def not_blank(column: str) -> classmethod:
    """Check ``<column>_not_blank``: text other than whitespace; a null fails."""
    return column_check(column, f"{column}_not_blank", is_not_blank)


def allowed(column: str, values: Iterable[str], *, nulls_pass: bool = False) -> classmethod:
    """Check ``<column>_allowed``: one of ``values``; a null fails unless ``nulls_pass``."""
    values = tuple(values)
    return column_check(column, f"{column}_allowed", lambda c: is_one_of(c, values), nulls_pass=nulls_pass)


def format_matches(column: str, pattern: str, *, nulls_pass: bool = False) -> classmethod:
    """Check ``<column>_format``: the value matches ``pattern`` (anchored: ``^...$``); a null fails unless
    ``nulls_pass``."""
    return column_check(column, f"{column}_format", lambda c: matches(c, pattern), nulls_pass=nulls_pass)


def pin_format(column: str = "pin", *, nulls_pass: bool = False, name: str = "pin_format") -> classmethod:
    """Check ``pin_format`` (or ``name``): a well-formed PIN (:func:`pin_is_well_formed`); a null fails unless
    ``nulls_pass``."""
    return column_check(column, name, pin_is_well_formed, nulls_pass=nulls_pass)


def positive(column: str) -> classmethod:
    """Check ``<column>_positive``: greater than zero; a null fails."""
    return column_check(column, f"{column}_positive", lambda c: (c > 0).fill_null(False))


def date_in_range(column: str, earliest: date, *, until: str, nulls_pass: bool = False) -> classmethod:
    """Check ``<column>_range``: a date from ``earliest`` to the Việt Nam date of timestamp column ``until``; a
    null fails unless ``nulls_pass``."""

    def in_range() -> pl.Expr:
        value = pl.col(column)
        valid = date_between(value, earliest, vietnam_date(until))
        return (value.is_null() | valid) if nulls_pass else valid

    return row_check(f"{column}_range", in_range)


def province_code_valid(on: str) -> classmethod:
    """Check ``province_code_valid``: ``province_code`` is a code in force on the Việt Nam date of timestamp
    column ``on``."""
    return row_check("province_code_valid", lambda: province_valid_on(pl.col("province_code"), vietnam_date(on)))


def pin_birth_consistency(pin: str = "pin") -> classmethod:
    """Check ``pin_birth_consistency``: the PIN agrees with ``birth_date`` and ``sex`` (:func:`pin_matches_birth`)."""
    return row_check("pin_birth_consistency",
                     lambda: pin_matches_birth(pl.col(pin), pl.col("birth_date"), pl.col("sex")))
