"""Contracts of the education database (Ministry of Education and Training), version 1.

The source arrives as file drops (CSV and Parquet per province and school year); CSV values are text until the
gate casts them to these types, so a value that cannot be cast (``2015-02-30``) is quarantined with
``value_type(<column>)`` before these checks run.

Identifiers: students by ``HS`` + 10 digits (the citizen's PIN where the record has one; older records have
none); schools by ``<level prefix>-<2-digit province code>-<4-digit serial>`` (MN, TH, THCS, THPT); enrolments by
a number. Province codes are those in force on the Việt Nam date of ``exported_at``.
"""

from __future__ import annotations

from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData
from pandera.typing.polars import Series

from ndc.contracts import checks
from ndc.contracts.base import SEXES, UTC_TIMESTAMP, NdcContract

EARLIEST_BIRTH = date(1990, 1, 1)
STUDENT_ID_PATTERN = r"^HS\d{10}$"
SCHOOL_ID_PATTERN = r"^(MN|TH|THCS|THPT)-\d{2}-\d{4}$"
LEVEL_PREFIXES = {"mam_non": "MN", "tieu_hoc": "TH", "thcs": "THCS", "thpt": "THPT"}
GRADES_OF_PREFIX = {"MN": (0, 0), "TH": (1, 5), "THCS": (6, 9), "THPT": (10, 12)}


def _school_prefix(school_id: pl.Expr) -> pl.Expr:
    return school_id.str.extract(r"^([A-Z]+)-", 1)


class Students(NdcContract):
    """One row per student record as a province's export holds it (the same student may appear in two files)."""

    student_id: str = pa.Field(nullable=True, description="HS + 10 digits")
    pin: str = pa.Field(nullable=True, description="the citizen's 12-digit PIN; null on older records")
    full_name: str = pa.Field(nullable=True)
    birth_date: date = pa.Field(nullable=True)
    sex: str = pa.Field(nullable=True, description="M or F")
    province_code: str = pa.Field(nullable=True, description="code in force on exported_at")
    exported_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "education.students"
        metadata = {"version": "1.1.0"}

    _student_id = checks.format_matches("student_id", STUDENT_ID_PATTERN)
    _pin = checks.pin_format("pin", nulls_pass=True)
    _full_name = checks.not_blank("full_name")
    _sex = checks.allowed("sex", SEXES)
    _birth_date = checks.date_in_range("birth_date", EARLIEST_BIRTH, until="exported_at")
    _province = checks.province_code_valid(on="exported_at")


class Schools(NdcContract):
    """One row per school (mầm non, tiểu học, THCS, THPT)."""

    school_id: str = pa.Field(nullable=True, description="MN|TH|THCS|THPT - province code - serial")
    name: str = pa.Field(nullable=True)
    level: str = pa.Field(nullable=True, description="mam_non, tieu_hoc, thcs or thpt")
    province_code: str = pa.Field(nullable=True, description="code in force on exported_at")
    ward: str = pa.Field(nullable=True)
    exported_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "education.schools"
        metadata = {"version": "1.1.0"}

    _school_id = checks.format_matches("school_id", SCHOOL_ID_PATTERN)
    _name = checks.not_blank("name")
    _level = checks.allowed("level", LEVEL_PREFIXES)
    _province = checks.province_code_valid(on="exported_at")

    @pa.dataframe_check(name="level_matches_school_id")
    def _level_prefix(cls, data: PolarsData) -> pl.LazyFrame:
        """The id's prefix names the level; rows whose id or level is itself invalid fail their own check."""
        prefix = pl.col("level").replace_strict(LEVEL_PREFIXES, default=None)
        applicable = checks.matches(pl.col("school_id"), SCHOOL_ID_PATTERN) & prefix.is_not_null()
        agrees = _school_prefix(pl.col("school_id")) == prefix
        return data.lazyframe.select((~applicable | agrees).fill_null(False))


class Enrolments(NdcContract):
    """One row per student, school and school year."""

    enrolment_id: int = pa.Field(nullable=False)
    student_id: str = pa.Field(nullable=True)
    school_id: str = pa.Field(nullable=True)
    school_year: str = pa.Field(nullable=True, description="e.g. 2025-2026")
    grade: int = pa.Field(nullable=True, description="0 (pre-school) to 12")
    exported_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "education.enrolments"
        metadata = {"version": "1.1.0"}

    _student_id = checks.format_matches("student_id", STUDENT_ID_PATTERN)
    _school_id = checks.format_matches("school_id", SCHOOL_ID_PATTERN)

    @pa.check("school_year", name="school_year_format")
    def _school_year(cls, data: PolarsData) -> pl.LazyFrame:
        column = pl.col(data.key)
        first = column.str.slice(0, 4).cast(pl.Int32, strict=False)
        second = column.str.slice(5, 4).cast(pl.Int32, strict=False)
        valid = checks.matches(column, r"^\d{4}-\d{4}$") & (second == first + 1) & first.is_between(2000, 2099)
        return data.lazyframe.select(valid.fill_null(False))

    @pa.check("grade", name="grade_range")
    def _grade(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_between(0, 12).fill_null(False))

    @pa.dataframe_check(name="grade_matches_school_level")
    def _grade_level(cls, data: PolarsData) -> pl.LazyFrame:
        """A grade taught at the school's level (its id's prefix); invalid grades or ids fail their own check."""
        prefix = _school_prefix(pl.col("school_id"))
        low = prefix.replace_strict({p: g[0] for p, g in GRADES_OF_PREFIX.items()}, default=None)
        high = prefix.replace_strict({p: g[1] for p, g in GRADES_OF_PREFIX.items()}, default=None)
        grade = pl.col("grade")
        applicable = checks.matches(pl.col("school_id"), SCHOOL_ID_PATTERN) & grade.is_between(0, 12).fill_null(False)
        return data.lazyframe.select((~applicable | grade.is_between(low, high)).fill_null(False))


__all__ = ["Enrolments", "Schools", "Students"]


CONTRACTS = (Students, Schools, Enrolments)
