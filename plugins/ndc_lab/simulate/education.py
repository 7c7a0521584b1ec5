"""Simulated education database (Ministry of Education and Training, Bộ Giáo dục và Đào tạo), as file drops.

The ministry's provincial departments export their records as files into a landing folder, one file per table,
school year and province: ``<root>/<table>/<school_year>/<province_code>.csv`` or ``.parquet``. The school-year
folder of ``students`` and ``schools`` is the school year of the export (July to June, Việt Nam time, so the
``2024-2025`` folder holds the 63 old province codes and ``2025-2026`` the 34 new ones); that of ``enrolments``
is the enrolment's own school year. The platform reads only ``<table>/...``; the simulator's ground truth lives in
``<root>/_simulator/`` (``defect_manifest.csv`` and the ``student_to_pin.csv`` crosswalk).

Tables:
- ``schools``: ``school_id`` (``TH-01-0001``: level prefix MN/TH/THCS/THPT, 2-digit province code at founding
  (an old code), 4-digit serial), name (``Trường Tiểu học Nguyễn Trãi``), level (``mam_non``, ``tieu_hoc``,
  ``thcs``, ``thpt``), province code in force on ``exported_at``, ward, ``exported_at``;
- ``students``: ``student_id`` (``HS`` + 10 digits), the citizen's PIN (null on some older records: students
  born before 2010), full name, birth date, sex, province code in force on ``exported_at``, ``exported_at``.
  Every citizen of ``common.population_citizens`` born 2006-2021 is a student;
- ``enrolments``: ``enrolment_id`` (bigint), student, school, school year (``2024-2025``, ``2025-2026``), grade
  (0 = pre-school for ages 3-5, then age - 5 up to 12), ``exported_at`` (in the school year: from 1 September).

Quirks of the drops:
- Formats are mixed per file: Parquet (typed: ``birth_date`` Date, ``exported_at`` Datetime UTC, ``grade``
  Int64) and CSV (header row, every value text; timestamps as ``2025-03-04T05:06:07Z``). CSV files are UTF-8,
  some with a BOM, and some provinces still export Windows-1258 (cp1258) with CRLF line ends: cp1258 stores
  Vietnamese tone marks as combining characters, so their names decode to decomposed text that the platform
  normalises to NFC. Every such row with a tone mark is a repair, listed in the manifest as ``legacy_encoding``
  (exact: no other defect is placed in a cp1258 file, so the count is the number of rows whose text changes).
- A student can appear in two provinces' files (an export before and after a move).
- File names are stable for a seed and written atomically (temporary name, then rename).

Known defects (``spec.defect_count(rows)`` rows per kind and table, disjoint; expected outcome and check):
- students: malformed PIN (``pin_format``), impossible date in a UTF-8 CSV such as ``2015-02-30``
  (``value_type(birth_date)``: the cast fails), future birth date (``birth_date_range``), unknown province code
  before 2025-07-01 or a retired one after (``province_code_valid``), blank name (``full_name_not_blank``) —
  all quarantined; the same student in a second province's file, exported earlier on the same UTC day
  (superseded, ``duplicate_key``); NFD name (repaired); cp1258 rows with tone marks (repaired,
  ``legacy_encoding``);
- schools: unknown/retired province (``province_code_valid``), blank name (``name_not_blank``) — quarantined;
  NFD name and cp1258 rows (repaired);
- enrolments: grade out of range (``grade_range``, quarantined); a student or a school that exists nowhere
  (exception: loaded, reported by dbt exceptions models).
Enrolments refer only to students and schools that pass the gate, so the orphans in the manifest are all of them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import polars as pl

from ndc.errors import NdcError
from ndc.reference import REORGANISATION_DATE, current_code_of, new_codes, old_codes
from ndc_lab.simulate import common
from ndc_lab.simulate import manifest as defects

TABLES = ("schools", "students", "enrolments")
EXPORTED_FROM = datetime(2024, 7, 1, tzinfo=UTC)
SCHOOL_YEARS = ("2024-2025", "2025-2026")
BIRTH_YEARS = (2006, 2021)
LEVELS = {"mam_non": ("MN", "Mầm non"), "tieu_hoc": ("TH", "Tiểu học"), "thcs": ("THCS", "THCS"),
          "thpt": ("THPT", "THPT")}
PATRONS = ("Nguyễn Trãi", "Lê Lợi", "Trần Hưng Đạo", "Lý Thường Kiệt", "Chu Văn An", "Nguyễn Du", "Lê Quý Đôn",
           "Nguyễn Bỉnh Khiêm", "Quang Trung", "Hai Bà Trưng", "Ngô Quyền", "Phan Bội Châu", "Phan Chu Trinh",
           "Võ Thị Sáu", "Lê Hồng Phong", "Nguyễn Thị Minh Khai", "Trần Phú", "Kim Đồng", "Lương Thế Vinh",
           "Nguyễn Khuyến", "Tô Hiến Thành", "Đinh Tiên Hoàng", "Bà Triệu", "Hùng Vương", "Lý Tự Trọng",
           "Nguyễn Văn Trỗi", "Trần Quốc Toản", "Yết Kiêu", "Hoàng Hoa Thám", "Nguyễn Đình Chiểu")
KINDERGARTEN_NAMES = ("Hoa Sen", "Hoa Mai", "Hoa Hồng", "Sơn Ca", "Họa Mi", "Hướng Dương", "Tuổi Thơ", "Măng Non",
                      "Bình Minh", "Ánh Dương", "Sao Mai", "Hoa Phượng", "Vành Khuyên", "Thỏ Ngọc", "Búp Sen Hồng")
IMPOSSIBLE_DAYS = ("02-30", "02-31", "04-31", "06-31", "09-31", "11-31")
# Share of the potential files per format: Parquet, UTF-8 CSV, UTF-8 CSV with BOM, Windows-1258 CSV.
FORMAT_WEIGHTS = {"parquet": 0.4, "utf-8": 0.35, "utf-8-sig": 0.15, "cp1258": 0.1}
CSV_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"

IMPOSSIBLE_DATE = defects.Defect("impossible_date", "quarantined", "value_type(birth_date)")
LEGACY = defects.Defect("legacy_encoding", "repaired", None)
GRADE = defects.Defect("grade_out_of_range", "quarantined", "grade_range")
ORPHAN_STUDENT = defects.Defect("orphan_student", "exception", None)
ORPHAN_SCHOOL = defects.Defect("orphan_school", "exception", None)

STUDENT_COLUMNS = ["student_id", "pin", "full_name", "birth_date", "sex", "province_code", "exported_at"]
SCHOOL_COLUMNS = ["school_id", "name", "level", "province_code", "ward", "exported_at"]
ENROLMENT_COLUMNS = ["enrolment_id", "student_id", "school_id", "school_year", "grade", "exported_at"]
FILE_COLUMNS = ["_file", "_encoding"]  # where a row is dropped: path under the root; CSV codec (null: Parquet)


# --- time, places and files -------------------------------------------------------------------------------

def _code_on_export() -> pl.Expr:
    """The code in force on the Việt Nam date of ``exported_at`` for the province whose old code is ``_old``."""
    return common.code_in_force(pl.col("_old"), common.vietnam_day(pl.col("exported_at")))


def export_school_year(stamp: pl.Expr) -> pl.Expr:
    """The school year (July to June, Việt Nam time) in which a record was exported."""
    day = common.vietnam_day(stamp)
    first = day.dt.year() - (day.dt.month() < 7).cast(pl.Int32)
    return pl.concat_str(first.cast(pl.String), pl.lit("-"), (first + 1).cast(pl.String))


class _FilePlan:
    """The format of every file a table can have (school year x province code in force), drawn once per seed."""

    def __init__(self, rng: np.random.Generator, table: str, formats: dict[str, float]) -> None:
        self.table = table
        potential = [(SCHOOL_YEARS[0], c) for c in old_codes()] + [(SCHOOL_YEARS[1], c) for c in new_codes()]
        weights = np.array(list(formats.values())) / sum(formats.values())
        drawn = rng.choice(np.array(list(formats)), size=len(potential), p=weights)
        self.formats = dict(zip(potential, drawn.tolist(), strict=True))

    def ensure(self, rng: np.random.Generator, present: list[tuple[str, str]], wanted: tuple[str, ...]) -> None:
        """Give each wanted format to one present file if no present file has it (present files in a stable
        order; a file already chosen here keeps its format)."""
        taken: set[tuple[str, str]] = set()
        for fmt in wanted:
            holders = [f for f in present if self.formats.get(f) == fmt]
            if holders:
                taken.add(holders[0])
                continue
            free = [f for f in present if f not in taken]
            if free:
                chosen = free[int(rng.integers(0, len(free)))]
                self.formats[chosen] = fmt
                taken.add(chosen)

    def annotate(self, frame: pl.DataFrame, year: str = "_year", code: str = "_file_code") -> pl.DataFrame:
        """Add ``_file`` and ``_encoding`` from each row's school-year folder and file province."""
        lookup = pl.DataFrame([{"_y": y, "_c": c, "_fmt": f} for (y, c), f in self.formats.items()])
        joined = frame.join(lookup, left_on=[year, code], right_on=["_y", "_c"], how="left", maintain_order="left")
        ext = pl.when(pl.col("_fmt") == "parquet").then(pl.lit("parquet")).otherwise(pl.lit("csv"))
        return joined.with_columns(
            pl.concat_str(pl.lit(f"{self.table}/"), pl.col(year), pl.lit("/"), pl.col(code), pl.lit("."), ext
                          ).alias("_file"),
            pl.when(pl.col("_fmt") != "parquet").then(pl.col("_fmt")).alias("_encoding"),
        ).drop("_fmt")


# --- Windows-1258 -------------------------------------------------------------------------------------------

_CLUSTER = re.compile(r"([^\u0300-\u036f])([\u0300-\u036f]+)")
_MODIFIERS = frozenset("\u0302\u0306\u031b")  # circumflex, breve, horn: part of the letters â ă ê ô ơ ư


def _legacy_cluster(match: re.Match[str]) -> str:
    marks = match.group(2)
    modifiers = "".join(m for m in marks if m in _MODIFIERS)
    tones = "".join(m for m in marks if m not in _MODIFIERS)
    return unicodedata.normalize("NFC", match.group(1) + modifiers) + tones


def legacy_form(text: str) -> str:
    """Text as Windows-1258 stores it: letters with circumflex, breve or horn precomposed (cp1258 has them),
    tone marks as combining characters. Canonically equivalent to ``text``."""
    return _CLUSTER.sub(_legacy_cluster, unicodedata.normalize("NFD", text))


def encode_cp1258(text: str) -> bytes:
    """Encode to Windows-1258, checking that every value round-trips (decode, then NFC, gives ``text``)."""
    data = legacy_form(text).encode("cp1258")
    if unicodedata.normalize("NFC", data.decode("cp1258")) != unicodedata.normalize("NFC", text):
        raise NdcError("text does not round-trip through Windows-1258")
    return data


# --- defect selection ---------------------------------------------------------------------------------------

def _legacy_rows(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Rows of Windows-1258 files whose text is not what cp1258 decodes to (it has tone marks)."""
    legacy = frame.filter(pl.col("_encoding") == "cp1258")
    changed = [any(v is not None and legacy_form(v) != v for v in row[1:])
               for row in legacy.select("_row", *columns).iter_rows()]
    return legacy.filter(pl.Series(changed, dtype=pl.Boolean))


# --- generation ---------------------------------------------------------------------------------------------

class _Generator(common.SourceGenerator):
    def __init__(self, spec: common.SourceSpec) -> None:
        super().__init__(spec, seed_offset=5_003)
        faker = self.faker()
        self.communes = sorted({faker.commune_name() for _ in range(400)})
        self.wards = self.ward_names(faker)

    def bad_province(self, n: int) -> pl.Expr:
        """An unknown code before the reorganisation, a retired one after (by the row's exported_at)."""
        return self.misplaced_province(common.vietnam_day(pl.col("exported_at")), n, unknown_first=True)

    def student_ids(self, n: int, taken: pl.Series | None = None) -> pl.Series:
        """``n`` distinct ``HS`` + 10-digit ids, none of them in ``taken``."""
        taken_numbers = np.array([], dtype=np.int64) if taken is None else (
            taken.str.slice(2).cast(pl.Int64).to_numpy())
        numbers = self.rng.integers(0, 10**10, n)
        while True:
            clash = pl.Series(numbers).is_duplicated().to_numpy() | np.isin(numbers, taken_numbers)
            if not clash.any():
                return pl.select(pl.lit("HS") + pl.lit(pl.Series(numbers)).cast(pl.String).str.zfill(10)).to_series()
            numbers[clash] = self.rng.integers(0, 10**10, int(clash.sum()))


def _base_students(gen: _Generator, citizens: pl.DataFrame) -> pl.DataFrame:
    year = pl.col("birth_date").dt.year()
    people = citizens.filter(year.is_between(*BIRTH_YEARS))
    n, rng = people.height, gen.rng
    older = (people["birth_date"].dt.year() < 2010).to_numpy() & (rng.random(n) < 0.3)
    frame = people.select(
        pl.lit(gen.student_ids(n)).alias("student_id"), pl.col("pin").alias("_true_pin"),
        pl.when(pl.lit(pl.Series(older))).then(pl.lit(None, pl.String)).otherwise(pl.col("pin")).alias("pin"),
        "full_name", pl.col("birth_date").dt.to_string("%Y-%m-%d").alias("birth_date"), "sex",
        pl.col("province_code").alias("_old"),
        pl.lit(gen.uniform_moments(EXPORTED_FROM, gen.until, n)).alias("exported_at"),
        pl.col("birth_date").dt.year().alias("_birth_year"),
    )
    return frame.with_columns(_code_on_export().alias("province_code"),
                              export_school_year(pl.col("exported_at")).alias("_year")
                              ).with_columns(pl.col("province_code").alias("_file_code")).with_row_index("_row")


def _present(frame: pl.DataFrame) -> list[tuple[str, str]]:
    return list(frame.select("_year", "_file_code").unique().sort("_year", "_file_code").iter_rows())


def _student_picks(gen: _Generator, frame: pl.DataFrame) -> dict[defects.Defect, list[int]]:
    k = gen.spec.defect_count(frame.height)
    picker = gen.picker(frame.height)
    encoding = frame["_encoding"]
    not_legacy = (encoding.ne_missing("cp1258")).to_numpy()
    utf8_csv = encoding.is_in(["utf-8", "utf-8-sig"]).fill_null(False).to_numpy()
    return {
        IMPOSSIBLE_DATE: picker.take(k, utf8_csv),
        defects.PIN_FORMAT: picker.take(k, not_legacy & frame["pin"].is_not_null().to_numpy()),
        defects.DUPLICATE: picker.take(k, not_legacy & common.room_for_older_version(frame["exported_at"])),
        defects.NFD: picker.take(k, not_legacy & common.decomposes(frame["full_name"])),
        defects.FUTURE_BIRTH: picker.take(k, not_legacy),
        defects.PROVINCE: picker.take(k, not_legacy),
        defects.BLANK_FULL_NAME: picker.take(k, not_legacy),
    }


def _inject_students(gen: _Generator, frame: pl.DataFrame, picks: dict[defects.Defect, list[int]]) -> pl.DataFrame:
    n, rng = frame.height, gen.rng
    days = pl.Series(gen.choice(IMPOSSIBLE_DAYS, n))
    frame = common.set_rows(frame, picks[IMPOSSIBLE_DATE], "birth_date",
                 pl.concat_str(pl.col("_birth_year").cast(pl.String), pl.lit("-"), pl.lit(days)))
    later = common.vietnam_day(pl.col("exported_at")) + pl.duration(days=pl.lit(pl.Series(rng.integers(1, 3000, n))))
    frame = common.set_rows(frame, picks[defects.FUTURE_BIRTH], "birth_date", later.dt.to_string("%Y-%m-%d"))
    kind = pl.Series(rng.integers(0, 3, n))
    frame = common.set_rows(frame, picks[defects.PIN_FORMAT], "pin",
                            pl.when(pl.lit(kind) == 0).then(pl.col("pin").str.slice(0, 11))
                 .when(pl.lit(kind) == 1).then(pl.col("pin") + pl.lit("0"))
                 .otherwise(pl.col("pin").str.slice(0, 7) + pl.lit("O") + pl.col("pin").str.slice(8)))
    frame = common.set_rows(frame, picks[defects.PROVINCE], "province_code", gen.bad_province(n))
    frame = common.set_rows(frame, picks[defects.BLANK_FULL_NAME], "full_name", common.blank_text())
    return common.set_rows(frame, picks[defects.NFD], "full_name", common.nfd(pl.col("full_name")))


def _duplicate_losers(gen: _Generator, frame: pl.DataFrame, rows: list[int], plan: _FilePlan) -> pl.DataFrame:
    """The older version of each duplicated student: exported earlier the same UTC day from another province's
    file (never a Windows-1258 one, so the older version carries no repair)."""
    losers = gen.older_versions(frame, rows, "exported_at")
    stamps = losers.select(common.vietnam_day(pl.col("exported_at")).alias("day"),
                           export_school_year(pl.col("exported_at")).alias("year"))
    provinces, current = [], current_code_of()
    for (day, year), winner_file in zip(stamps.iter_rows(), losers["_file"].to_list(), strict=True):
        while True:
            old = str(gen.choice(old_codes(), 1)[0])
            code = old if day < REORGANISATION_DATE else current[old]
            if plan.formats[(year, code)] != "cp1258" and not winner_file.startswith(f"students/{year}/{code}."):
                provinces.append(old)
                break
    losers = losers.with_columns(pl.Series("_old", provinces, dtype=pl.String)).with_columns(
        _code_on_export().alias("province_code"),
        export_school_year(pl.col("exported_at")).alias("_year"))
    return plan.annotate(losers.with_columns(pl.col("province_code").alias("_file_code")).drop(FILE_COLUMNS))


def _students(gen: _Generator, citizens: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """(student rows with both versions of duplicates, landing students (one row each), manifest parts)."""
    base = _base_students(gen, citizens)
    plan = _FilePlan(gen.rng, "students", FORMAT_WEIGHTS)
    plan.ensure(gen.rng, _present(base), ("cp1258", "utf-8-sig"))
    base = plan.annotate(base)
    picks = _student_picks(gen, base)
    frame = _inject_students(gen, base, picks)
    losers = _duplicate_losers(gen, frame, picks[defects.DUPLICATE], plan)
    manifest = defects.picked_manifest("students", frame, "student_id", picks,
                                       [d for d in picks if d != defects.DUPLICATE])
    manifest.append(defects.manifest_rows("students", losers["student_id"], defects.DUPLICATE, losers["exported_at"]))
    manifest.append(defects.manifest_rows("students", _legacy_rows(frame, ["full_name"])["student_id"], LEGACY))
    landing = frame.filter(~pl.col("_row").is_in(defects.quarantined_rows(picks)))
    return pl.concat([frame, losers.select(frame.columns)]), landing, manifest


def _school_names(gen: _Generator, level: np.ndarray) -> pl.Series:
    n = level.size
    patron = np.where(gen.rng.random(n) < 0.7, gen.choice(PATRONS, n), gen.choice(gen.communes, n))
    part = np.where(level == "mam_non", gen.choice(KINDERGARTEN_NAMES, n), patron)
    label = pl.Series(level).replace_strict({k: v[1] for k, v in LEVELS.items()})
    return pl.select(pl.concat_str(pl.lit("Trường "), pl.lit(label), pl.lit(" "), pl.lit(pl.Series(part)))
                     ).to_series()


def _base_schools(gen: _Generator, students: pl.DataFrame) -> pl.DataFrame:
    """``2 + students // 400`` schools per province (old code) and level, so every province has two of each."""
    per_province = dict(students.group_by("_old").len().iter_rows())
    groups = [(code, level, 2 + per_province.get(code, 0) // 400) for code in old_codes() for level in LEVELS]
    old = np.repeat([g[0] for g in groups], [g[2] for g in groups])
    level = np.repeat([g[1] for g in groups], [g[2] for g in groups])
    serial = np.concatenate([np.arange(1, g[2] + 1) for g in groups])
    n = old.size
    prefix = pl.Series(level).replace_strict({k: v[0] for k, v in LEVELS.items()})
    frame = pl.DataFrame({
        "school_id": pl.select(pl.concat_str(pl.lit(prefix), pl.lit("-"), pl.lit(pl.Series(old)), pl.lit("-"),
                                             pl.lit(pl.Series(serial)).cast(pl.String).str.zfill(4))).to_series(),
        "name": _school_names(gen, level), "level": level, "_old": old, "_serial": serial,
        "ward": gen.choice(gen.wards, n), "exported_at": gen.uniform_moments(EXPORTED_FROM, gen.until, n)})
    return frame.with_columns(_code_on_export().alias("province_code"),
                              export_school_year(pl.col("exported_at")).alias("_year")
                              ).with_columns(pl.col("province_code").alias("_file_code")).with_row_index("_row")


def _schools(gen: _Generator, students: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """(school rows, schools that pass the gate, manifest parts). Only a school with serial 2 or more gets a
    rejecting defect, so every province and level keeps a school for enrolments."""
    base = _base_schools(gen, students)
    plan = _FilePlan(gen.rng, "schools", FORMAT_WEIGHTS)
    plan.ensure(gen.rng, _present(base), ("cp1258", "utf-8-sig"))
    base = plan.annotate(base)
    k = gen.spec.defect_count(base.height)
    picker = gen.picker(base.height)
    not_legacy = base["_encoding"].ne_missing("cp1258").to_numpy()
    spare = not_legacy & (base["_serial"] >= 2).to_numpy()
    picks = {defects.PROVINCE: picker.take(k, spare), defects.BLANK_NAME: picker.take(k, spare),
             defects.NFD: picker.take(k, not_legacy & common.decomposes(base["name"]))}
    frame = common.set_rows(base, picks[defects.PROVINCE], "province_code", gen.bad_province(base.height))
    frame = common.set_rows(frame, picks[defects.BLANK_NAME], "name", common.blank_text("  "))
    frame = common.set_rows(frame, picks[defects.NFD], "name", common.nfd(pl.col("name")))
    manifest = defects.picked_manifest("schools", frame, "school_id", picks)
    manifest.append(defects.manifest_rows("schools", _legacy_rows(frame, ["name", "ward"])["school_id"], LEGACY))
    landing = frame.filter(~pl.col("_row").is_in(defects.quarantined_rows(picks)))
    return frame, landing, manifest


def _enrolment_candidates(gen: _Generator, students: pl.DataFrame) -> pl.DataFrame:
    """One row per landing student and school year they attend (ages 3 to 17; 3% not enrolled)."""
    parts = []
    for year in SCHOOL_YEARS:
        start = int(year[:4])
        age = start - students["_birth_year"]
        attends = (age.is_between(3, 17)).to_numpy() & (gen.rng.random(students.height) >= 0.03)
        parts.append(students.filter(pl.Series(attends)).select(
            "student_id", "_old", pl.lit(year).alias("school_year"),
            pl.max_horizontal(pl.lit(start) - pl.col("_birth_year") - 5, pl.lit(0)).cast(pl.Int64).alias("grade")))
    frame = pl.concat(parts)
    level = (pl.when(pl.col("grade") == 0).then(pl.lit("mam_non")).when(pl.col("grade") <= 5).then(pl.lit("tieu_hoc"))
             .when(pl.col("grade") <= 9).then(pl.lit("thcs")).otherwise(pl.lit("thpt")))
    return frame.with_columns(level.alias("level"))


def _assign_schools(gen: _Generator, frame: pl.DataFrame, schools: pl.DataFrame) -> pl.DataFrame:
    ordered = schools.sort("_old", "level", "school_id")
    groups = ordered.with_row_index("_at").group_by("_old", "level").agg(
        pl.col("_at").min().alias("_start"), pl.len().alias("_count"))
    joined = frame.join(groups, on=["_old", "level"], how="left", maintain_order="left")
    picked = joined["_start"] + (pl.Series(gen.rng.random(joined.height)) * joined["_count"]).cast(pl.UInt32)
    return joined.with_columns(ordered["school_id"].gather(picked).alias("school_id")).drop("_start", "_count")


def _enrolment_times(gen: _Generator, frame: pl.DataFrame) -> pl.Series:
    windows = {SCHOOL_YEARS[0]: (datetime(2024, 9, 1, tzinfo=UTC), datetime(2025, 6, 30, tzinfo=UTC)),
               SCHOOL_YEARS[1]: (datetime(2025, 9, 1, tzinfo=UTC), gen.until)}
    stamps = {year: gen.uniform_moments(start, end, frame.height) for year, (start, end) in windows.items()}
    return frame.select(pl.when(pl.col("school_year") == SCHOOL_YEARS[0]).then(pl.lit(stamps[SCHOOL_YEARS[0]]))
                        .otherwise(pl.lit(stamps[SCHOOL_YEARS[1]]))).to_series()


def _enrolments(gen: _Generator, students: pl.DataFrame, schools: pl.DataFrame,
                all_student_ids: pl.Series) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    frame = _assign_schools(gen, _enrolment_candidates(gen, students), schools)
    frame = frame.with_columns(pl.lit(_enrolment_times(gen, frame)).alias("exported_at")).with_columns(
        _code_on_export().alias("_file_code"),
        pl.col("school_year").alias("_year"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("enrolment_id")).with_row_index("_row")
    plan = _FilePlan(gen.rng, "enrolments", {k: v for k, v in FORMAT_WEIGHTS.items() if k != "cp1258"})
    plan.ensure(gen.rng, _present(frame), ("utf-8-sig",))
    frame = plan.annotate(frame)
    k = gen.spec.defect_count(frame.height)
    picker = gen.picker(frame.height)
    picks = {GRADE: picker.take(k), ORPHAN_STUDENT: picker.take(k), ORPHAN_SCHOOL: picker.take(k)}
    n = frame.height
    grades = pl.Series(gen.choice([-1, 13, 14, 15], n))
    frame = common.set_rows(frame, picks[GRADE], "grade", pl.lit(grades).cast(pl.Int64))
    absent = gen.student_ids(n, all_student_ids)
    frame = common.set_rows(frame, picks[ORPHAN_STUDENT], "student_id", pl.lit(absent))
    ghost = pl.Series(gen.rng.integers(9000, 10_000, n)).cast(pl.String)
    frame = common.set_rows(frame, picks[ORPHAN_SCHOOL], "school_id", pl.col("school_id").str.head(-4) + pl.lit(ghost))
    return frame, defects.picked_manifest("enrolments", frame, "enrolment_id", picks)


def _finish(frame: pl.DataFrame, columns: list[str], key: str) -> pl.DataFrame:
    return frame.select(*columns, *FILE_COLUMNS).sort("_file", "exported_at", key)


def simulate(spec: common.SourceSpec) -> common.SimulatedSource:
    """The education database's drops for the spec (pure and deterministic)."""
    gen = _Generator(spec)
    citizens = common.population_citizens(spec)
    students, landing_students, manifest = _students(gen, citizens)
    schools, landing_schools, school_manifest = _schools(gen, students)
    enrolments, enrolment_manifest = _enrolments(gen, landing_students, landing_schools, students["student_id"])
    crosswalk = students.unique("student_id", keep="first", maintain_order=True).select(
        "student_id", pl.col("_true_pin").alias("pin")).sort("student_id")
    return common.SimulatedSource(
        tables={"schools": _finish(schools, SCHOOL_COLUMNS, "school_id"),
                "students": _finish(students, STUDENT_COLUMNS, "student_id"),
                "enrolments": _finish(enrolments, ENROLMENT_COLUMNS, "enrolment_id")},
        manifest=pl.concat([defects.empty_manifest(), *manifest, *school_manifest, *enrolment_manifest]),
        crosswalks={"student_to_pin": crosswalk})


# --- writing the drops --------------------------------------------------------------------------------------

def drop_root(target: str) -> Path:
    parts = urlsplit(target)
    if parts.scheme != "file":
        raise NdcError(f"education drops go to a file:// URL, got {target!r}")
    return Path(unquote(parts.path))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    if "birth_date" in frame.columns:
        frame = frame.with_columns(pl.col("birth_date").str.to_date("%Y-%m-%d", strict=True))
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    return buffer.getvalue()


def _csv_bytes(frame: pl.DataFrame, encoding: str) -> bytes:
    if encoding == "cp1258":
        return encode_cp1258(frame.write_csv(datetime_format=CSV_TIMESTAMP, line_terminator="\r\n"))
    return frame.write_csv(datetime_format=CSV_TIMESTAMP).encode(encoding)


def file_bytes(frame: pl.DataFrame) -> dict[str, bytes]:
    """Every file of one simulated table: relative path -> content."""
    found = {}
    for (path, encoding), part in sorted(frame.group_by("_file", "_encoding"), key=lambda item: item[0][0]):
        rows = part.drop(FILE_COLUMNS)
        found[path] = _parquet_bytes(rows) if encoding is None else _csv_bytes(rows, encoding)
    return found


def write(target: str, sim: common.SimulatedSource, spec: common.SourceSpec) -> None:
    """(Re)create the drop folder at ``target`` (``file://``): the tables' files, then the manifest and the
    crosswalks under ``_simulator/``. Old drops of these tables are removed first."""
    root = drop_root(target)
    root.mkdir(parents=True, exist_ok=True)
    for name in (*TABLES, "_simulator"):
        shutil.rmtree(root / name, ignore_errors=True)
    for table in TABLES:
        for relative, data in file_bytes(sim.tables[table]).items():
            _write_atomic(root / relative, data)
    _write_atomic(root / "_simulator" / "defect_manifest.csv",
                  sim.manifest.write_csv(datetime_format="%Y-%m-%dT%H:%M:%S%.6fZ").encode())
    for name, frame in sorted(sim.crosswalks.items()):
        _write_atomic(root / "_simulator" / f"{name}.csv", frame.write_csv().encode())


def default_target() -> str:
    from ndc.warehouse import connections

    return connections.source_url("ndc_src_education", "files")


def describe(sim: common.SimulatedSource) -> str:
    files = sum(frame["_file"].n_unique() for frame in sim.tables.values())
    return (f"{sim.tables['students'].height:,} student rows, {sim.tables['schools'].height:,} schools, "
            f"{sim.tables['enrolments'].height:,} enrolments in {files:,} files")


__all__ = ["default_target", "describe", "drop_root", "encode_cp1258", "legacy_form", "simulate", "write"]
