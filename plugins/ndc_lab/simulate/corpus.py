"""A catalogue of bad input: defective rows and files for the five sources, each with the outcome the platform
owes it, declared here (by the generator) and never read back from the contract under test.

Every kind turns a good row (a dict, as the source holds it) or a good CSV file (bytes, UTF-8, header row) into the
defective one. Outcomes:

- ``quarantined``: the row fails the named check(s) at gate 1 and goes to ``quarantine.rows``;
- ``superseded``: an older version of a key in the same extract window (the newer one loads; the older goes to
  quarantine as ``duplicate_key``);
- ``repaired``: loaded, text normalised to NFC (and counted);
- ``loaded``: loaded byte for byte (e.g. SQL-looking text: proof that values never become SQL);
- ``exception``: loaded, and listed by the dbt exceptions model ``shared.identity_exceptions`` with
  ``exception_reason``;
- ``blocked``: the whole file is refused with an ``NdcError`` naming the file (and ``message``).

Good rows come from the simulators at ``defect_rate=0`` (:func:`good_tables`); :func:`inject` derives one defective
row per drawn kind from a donor good row (the donor itself is not loaded, so every key is unique, except for
``superseded``, whose donor is the winning version).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl

from ndc.reference import new_codes, old_codes
from ndc_lab.simulate.common import SourceSpec, tax_code_check_digit

OUTCOMES = ("quarantined", "superseded", "repaired", "loaded", "exception", "blocked")
SOURCES = ("population", "taxation", "insurance", "enterprise", "education")
AFTER_REORGANISATION = datetime(2025, 9, 1, 3, 0, tzinfo=UTC)  # a Việt Nam date after 2025-07-01
RETIRED_CODE = sorted(set(old_codes()) - set(new_codes()))[0]
HUGE_TEXT_CHARS = 10 * 1024 * 1024
SQL_TEXT = "Robert'); drop table citizens; -- $$ \\ \" ; select pg_sleep(5) /*"
CSV_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"

Row = dict


@dataclass(frozen=True)
class DefectKind:
    name: str
    source: str
    table: str
    description: str
    outcome: str
    checks: tuple[str, ...] = ()
    row: Callable[[Row], Row] | None = None        # good row -> defective row
    file: Callable[[bytes], bytes] | None = None    # good UTF-8 CSV (header + rows) -> defective file
    message: str = ""                               # blocked: what the error names besides the file
    exception_reason: str | None = None             # exception: the reason shared.identity_exceptions gives
    suffix: str = ".csv"                            # the defective file's extension
    file_rows: tuple[str, ...] = field(default=())  # file kinds that load rows: their outcome per good row

    @property
    def dataset(self) -> str:
        return f"{self.source}.{self.table}"

    @property
    def is_file(self) -> bool:
        return self.file is not None


# --- row transforms ------------------------------------------------------------------------------------------

def _set(**values) -> Callable[[Row], Row]:
    return lambda row: {**row, **values}


def _edit(column: str, change: Callable) -> Callable[[Row], Row]:
    return lambda row: {**row, column: change(row[column])}


def _nfd(column: str) -> Callable[[Row], Row]:
    return _edit(column, lambda text: unicodedata.normalize("NFD", text))


def _with_birth(row: Row, birth: date) -> Row:
    """A citizen born on ``birth``, the PIN's century/sex digit and year digits kept consistent with it, so that
    only the date's own check fails."""
    pin = row["pin"]
    digit = (birth.year // 100 - 19) * 2 + (row["sex"] == "F")
    return {**row, "birth_date": birth, "pin": f"{pin[:3]}{digit}{birth.year % 100:02d}{pin[6:]}"}


def _vn_date(stamp: datetime) -> date:
    return (stamp.astimezone(UTC) + timedelta(hours=7)).date()


def _future_birth(row: Row) -> Row:
    return {**_with_birth(row, _vn_date(row["updated_at"]) + timedelta(days=1)), "death_date": None}


def _flip_sex(row: Row) -> Row:
    return {**row, "sex": "F" if row["sex"] == "M" else "M"}


def _retired_province(time_column: str) -> Callable[[Row], Row]:
    return _set(**{time_column: AFTER_REORGANISATION, "province_code": RETIRED_CODE})


def _older_version(time_column: str) -> Callable[[Row], Row]:
    """The same key, one second older, another value: the version that loses in the window."""
    def change(row: Row) -> Row:
        name_column = "full_name" if "full_name" in row else "name"
        return {**row, time_column: row[time_column] - timedelta(seconds=1), name_column: "Phiên Bản Cũ"}
    return change


def _wrong_check_digit(code: str) -> str:
    return code[:9] + str((int(code[9]) + 1) % 10)


def _absent_tax_code(code: str) -> str:
    """A well-formed tax code (valid check digit) that no simulated taxpayer holds (serial 99999xx)."""
    for tail in range(100):
        first9 = f"{code[:2]}99999{tail:02d}"
        digit = tax_code_check_digit(first9)
        if digit is not None:
            return f"{first9}{digit}"
    raise AssertionError("no valid check digit")  # unreachable: one in eleven serials has none


def _control(text: str) -> str:
    return f"{text[:3]}\x07\x1b[2J{text[3:]}"


def _huge(text: str) -> str:
    return (text + " ") * (HUGE_TEXT_CHARS // (len(text) + 1) + 1)


# --- file transforms (good UTF-8 CSV bytes -> defective bytes) -----------------------------------------------

def _empty(_: bytes) -> bytes:
    return b""


def _header_only(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0] + b"\n"


def _truncated(data: bytes) -> bytes:
    """Cut inside the last row's quoted field: a transfer that stopped mid-row."""
    body = data.rstrip(b"\n")
    last = body.rsplit(b"\n", 1)[1]
    cut = body[: len(body) - len(last)] + last.split(b",", 1)[0] + b',"Nguy'
    return cut


def _cp1258(data: bytes) -> bytes:
    from ndc_lab.simulate.education import encode_cp1258

    return encode_cp1258(data.decode("utf-8").replace("\n", "\r\n"))


def _utf16(data: bytes) -> bytes:
    return data.decode("utf-8").encode("utf-16")


def _invalid_bytes(data: bytes) -> bytes:
    header, rest = data.split(b"\n", 1)
    return header + b"\n" + rest.replace(b",", b",\x81\x8d", 1)


def _semicolons(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    out = io.StringIO()
    csv.writer(out, delimiter=";", lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _drop_column(name: str) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        at = rows[0].index(name)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([r[:at] + r[at + 1:] for r in rows])
        return out.getvalue().encode("utf-8")
    return change


def _extra_column(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [[*rows[0], "ghi_chu"], *([*r, "'; drop table students; --"] for r in rows[1:])])
    return out.getvalue().encode("utf-8")


def _bom_crlf(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")


def _not_parquet(data: bytes) -> bytes:
    """A Parquet file cut off after its first bytes (magic present, footer missing)."""
    buffer = io.BytesIO()
    pl.read_csv(io.BytesIO(data), infer_schema=False).write_parquet(buffer)
    return buffer.getvalue()[:64]


# --- the catalogue ---------------------------------------------------------------------------------------------

def _k(name, source, table, description, outcome, checks=(), **rest) -> DefectKind:
    return DefectKind(name, source, table, description, outcome, tuple(checks), **rest)


P, T, I, E, D = SOURCES[0], SOURCES[1], SOURCES[2], SOURCES[3], SOURCES[4]  # noqa: E741
CONTROL = "text_without_control_characters"
TEXT_LENGTH = "text_length"

DEFECTS: tuple[DefectKind, ...] = (
    # population (PostgreSQL)
    _k("pin_wrong_length", P, "citizens", "PIN of 11 digits", "quarantined", ["pin_format"],
       row=_edit("pin", lambda v: v[:11])),
    _k("pin_non_digit", P, "citizens", "PIN with the letter O for a zero", "quarantined", ["pin_format"],
       row=_edit("pin", lambda v: v[:7] + "O" + v[8:])),
    _k("pin_null", P, "citizens", "no PIN at all (null key)", "quarantined", ["pin_format"], row=_set(pin=None)),
    _k("pin_birth_mismatch", P, "citizens", "sex contradicts the PIN's century/sex digit", "quarantined",
       ["pin_birth_consistency"], row=_flip_sex),
    _k("future_birth_date", P, "citizens", "born after the record's date (PIN consistent)", "quarantined",
       ["birth_date_range"], row=_future_birth),
    _k("death_before_birth", P, "citizens", "death date before the birth date", "quarantined",
       ["death_after_birth"], row=lambda r: {**r, "death_date": r["birth_date"] - timedelta(days=10)}),
    _k("retired_province_code", P, "citizens", "a 63-province code no longer in force, on a record dated after "
       "2025-07-01", "quarantined", ["province_code_valid"], row=_retired_province("updated_at")),
    _k("unknown_province_code", P, "citizens", "province code 99 (none such)", "quarantined",
       ["province_code_valid"], row=_set(province_code="99")),
    _k("blank_name", P, "citizens", "full name of spaces", "quarantined", ["full_name_not_blank"],
       row=_set(full_name="   ")),
    _k("cmnd_wrong_length", P, "citizens", "legacy ID card number of 8 digits", "quarantined", ["cmnd_format"],
       row=_set(cmnd="12345678")),
    _k("sex_unknown", P, "citizens", "sex X (only M or F)", "quarantined", ["sex_allowed"], row=_set(sex="X")),
    _k("control_characters", P, "citizens", "BEL and an ANSI escape inside the name", "quarantined", [CONTROL],
       row=_edit("full_name", _control)),
    _k("huge_text", P, "citizens", "a 10 MB address", "quarantined", [TEXT_LENGTH], row=_edit("address", _huge)),
    _k("nfd_text", P, "citizens", "name and address in decomposed Unicode (NFD)", "repaired",
       row=lambda r: _nfd("address")(_nfd("full_name")(r))),
    _k("sql_text", P, "citizens", "SQL-looking name and address", "loaded",
       row=_set(full_name=SQL_TEXT, address="'; delete from quarantine.rows; --")),
    _k("astral_text", P, "citizens", "a name with characters outside the BMP (𠀧 Nôm, emoji)", "loaded",
       row=_edit("full_name", lambda v: v + " 𠀧😀")),
    _k("duplicate_key", P, "citizens", "two versions of one PIN in one window: the older loses", "superseded",
       ["duplicate_key"], row=_older_version("updated_at")),
    _k("orphan_household", P, "citizens", "household id that no household has", "exception",
       row=_set(household_id="HK9999999999"), exception_reason="household_not_found"),
    # taxation (PostgreSQL)
    _k("tax_code_check_digit", T, "taxpayers", "enterprise tax code with a wrong check digit", "quarantined",
       ["taxpayer_id_format"], row=lambda r: {**r, "taxpayer_kind": "enterprise", "pin": None,
                                               "taxpayer_id": _wrong_check_digit(r["taxpayer_id"])}),
    _k("taxpayer_kind_unknown", T, "taxpayers", "taxpayer kind 'household'", "quarantined",
       ["taxpayer_kind_allowed"], row=_set(taxpayer_kind="household")),
    _k("negative_amount", T, "filings", "declared amount below zero", "quarantined",
       ["declared_amount_non_negative"], row=_set(declared_amount=-1.0)),
    _k("form_code_unknown", T, "filings", "form code not in the catalogue", "quarantined", ["form_code_allowed"],
       row=_set(form_code="99/XYZ")),
    _k("tax_period_wrong_format", T, "filings", "tax period 2025-13", "quarantined", ["tax_period_format"],
       row=_set(tax_period="2025-13")),
    _k("orphan_taxpayer", T, "payments", "payment by a tax code no taxpayer has", "exception",
       row=_edit("taxpayer_id", _absent_tax_code), exception_reason="taxpayer_not_found"),
    # insurance (REST API)
    _k("insurance_code_wrong_length", I, "insured_people", "insurance code of 9 digits", "quarantined",
       ["insurance_code_format"], row=_edit("insurance_code", lambda v: v[:9])),
    _k("pin_missing_after_2025_08", I, "insured_people", "no PIN on a record updated after 2025-08-01",
       "quarantined", ["pin_required_from_2025_08"], row=_set(pin=None, updated_at=AFTER_REORGANISATION)),
    _k("zero_amount", I, "contributions", "a contribution of 0 dong", "quarantined", ["amount_positive"],
       row=_set(amount=0.0)),
    _k("month_not_first_day", I, "contributions", "contribution month on the 15th", "quarantined",
       ["contribution_month_range"], row=_edit("contribution_month", lambda d: d.replace(day=15))),
    _k("orphan_insurance_code", I, "contributions", "contribution of an insurance code nobody has", "exception",
       row=_edit("insurance_code", lambda v: v[:2] + "99999999"), exception_reason="insured_person_not_found"),
    # enterprise (MariaDB)
    _k("enterprise_code_check_digit", E, "enterprises", "enterprise code with a wrong check digit", "quarantined",
       ["enterprise_code_format"], row=_edit("enterprise_code", _wrong_check_digit)),
    _k("enterprise_code_wrong_length", E, "enterprises", "enterprise code of 9 digits", "quarantined",
       ["enterprise_code_format"], row=_edit("enterprise_code", lambda v: v[:9])),
    _k("status_unknown", E, "enterprises", "status 'closed' (not in the register's list)", "quarantined",
       ["status_allowed"], row=_set(status="closed")),
    _k("enterprise_retired_province", E, "enterprises", "retired province code after 2025-07-01", "quarantined",
       ["province_code_valid"], row=_retired_province("updated_at")),
    _k("enterprise_control_characters", E, "enterprises", "a carriage return and a NUL-free escape in the name",
       "quarantined", [CONTROL], row=_edit("name", lambda v: v + "\r\x1b")),
    _k("enterprise_nul_byte", E, "enterprises", "a NUL character inside the name (MariaDB text holds one)",
       "quarantined", [CONTROL], row=_edit("name", lambda v: v[:2] + "\x00" + v[2:])),
    _k("enterprise_sql_text", E, "enterprises", "SQL-looking name and address", "loaded",
       row=_set(name=SQL_TEXT, address="`; drop database x; --")),
    _k("enterprise_nfd", E, "enterprises", "name in NFD", "repaired", row=_nfd("name")),
    _k("enterprise_duplicate", E, "enterprises", "an older version of one code in the same window", "superseded",
       ["duplicate_key"], row=_older_version("updated_at")),
    _k("orphan_enterprise", E, "branches", "a branch of an enterprise code nobody has", "exception",
       row=lambda r: {**r, "enterprise_code": _absent_tax_code(r["enterprise_code"]),
                      "branch_code": _absent_tax_code(r["enterprise_code"]) + "-001"},
       exception_reason="enterprise_not_found"),
    # education (file drops): rows inside a good CSV
    _k("impossible_date", D, "students", "birth date 2015-02-30", "quarantined", ["value_type(birth_date)"],
       row=_edit("birth_date", lambda v: v[:4] + "-02-30")),
    _k("date_wrong_format", D, "students", "birth date written 30/01/2015", "quarantined",
       ["value_type(birth_date)"], row=_edit("birth_date", lambda v: f"{v[8:10]}/{v[5:7]}/{v[:4]}")),
    _k("timestamp_wrong_format", D, "students", "exported_at written 04-03-2025 05:06", "quarantined",
       ["value_type(exported_at)"], row=_set(exported_at="04-03-2025 05:06")),
    _k("student_id_format", D, "students", "student id without the HS prefix", "quarantined",
       ["student_id_format"], row=_edit("student_id", lambda v: "XX" + v[2:])),
    _k("student_control_characters", D, "students", "a tab and a unit separator in the name", "quarantined",
       [CONTROL], row=_edit("full_name", lambda v: v + "\t\x1f")),
    _k("student_nul_byte", D, "students", "a NUL character inside the name (a CSV can carry one)", "quarantined",
       [CONTROL], row=_edit("full_name", lambda v: v[:2] + "\x00" + v[2:])),
    _k("student_nfd", D, "students", "name in NFD", "repaired", row=_nfd("full_name")),
    _k("student_sql_text", D, "students", "SQL-looking name", "loaded", row=_set(full_name=SQL_TEXT)),
    _k("grade_out_of_range", D, "enrolments", "grade 13", "quarantined", ["grade_range"], row=_set(grade="13")),
    _k("grade_not_a_number", D, "enrolments", "grade 'lop 5'", "quarantined", ["value_type(grade)"],
       row=_set(grade="lop 5")),
    _k("orphan_student", D, "enrolments", "enrolment of a student id nobody has", "exception",
       row=_set(student_id="HS9999999999"), exception_reason="student_not_found"),
    # education (file drops): whole files
    _k("empty_file", D, "students", "a file of zero bytes", "blocked", file=_empty, message="column"),
    _k("header_only", D, "students", "a header and no rows", "loaded", file=_header_only),
    _k("truncated_file", D, "students", "cut off inside the last row's quoted field", "blocked",
       file=_truncated, message="truncated"),
    _k("legacy_encoding", D, "students", "Windows-1258 with CRLF (the source's declared legacy encoding)",
       "repaired", file=_cp1258, file_rows=("repaired",)),
    _k("wrong_encoding", D, "students", "UTF-16 (neither UTF-8 nor the declared Windows-1258 as a CSV)",
       "blocked", file=_utf16, message="column"),
    _k("invalid_bytes", D, "students", "bytes 0x81 0x8D: valid in neither UTF-8 nor Windows-1258", "blocked",
       file=_invalid_bytes, message="neither UTF-8 nor"),
    _k("wrong_delimiter", D, "students", "semicolons instead of commas", "blocked", file=_semicolons,
       message="column"),
    _k("missing_column", D, "students", "no birth_date column", "blocked", file=_drop_column("birth_date"),
       message="column birth_date"),
    _k("extra_column", D, "students", "an extra column (SQL-looking values): recorded, filtered out", "loaded",
       file=_extra_column, file_rows=("loaded",)),
    _k("bom_and_crlf", D, "students", "UTF-8 with a BOM and CRLF line ends", "loaded", file=_bom_crlf,
       file_rows=("loaded",)),
    _k("corrupt_parquet", D, "students", "a Parquet file cut after 64 bytes", "blocked", file=_not_parquet,
       message="parquet", suffix=".parquet"),
)

BY_NAME = {kind.name: kind for kind in DEFECTS}
ROW_KINDS = tuple(kind for kind in DEFECTS if kind.row is not None)
FILE_KINDS = tuple(kind for kind in DEFECTS if kind.is_file)


def kinds_for(dataset: str) -> tuple[DefectKind, ...]:
    return tuple(kind for kind in ROW_KINDS if kind.dataset == dataset)


# --- good rows ---------------------------------------------------------------------------------------------------

def good_sims(spec: SourceSpec) -> dict[str, object]:
    """The five simulations with no defect injected (``defect_rate=0``; same people across sources)."""
    import importlib

    clean = SourceSpec(citizens=spec.citizens, seed=spec.seed, defect_rate=0.0, as_of=spec.as_of)
    return {source: importlib.import_module(f"ndc_lab.simulate.{source}").simulate(clean) for source in SOURCES}


def tables_of(sim) -> dict[str, pl.DataFrame]:
    if hasattr(sim, "tables"):
        return dict(sim.tables)
    return {"citizens": sim.citizens, "households": sim.households, "residence_changes": sim.residence_changes}


def good_tables(spec: SourceSpec) -> dict[str, dict[str, pl.DataFrame]]:
    """Every table of the five sources with no defect injected: source -> table -> rows (education's with
    ``_file``/``_encoding``; its ``birth_date`` is text, as a CSV holds it)."""
    return {source: tables_of(sim) for source, sim in good_sims(spec).items()}


def primary_key(dataset: str) -> tuple[str, ...]:
    from ndc.config.sources import find_source
    from ndc.settings import get_settings

    source, table = dataset.split(".")
    return tuple(find_source(get_settings().sources_dir, source).table(table).primary_key)


def record_key(row: Row, key: tuple[str, ...]) -> str:
    """The key as quarantine records it (``concat_ws('|', key::text)``: nulls skipped)."""
    return "|".join(str(row[c]) for c in key if row[c] is not None)


@dataclass(frozen=True)
class Labelled:
    """One row written to a source, with the outcome the generator declares for it."""

    dataset: str
    key: str
    kind: str           # "good" or a DefectKind name
    outcome: str
    checks: tuple[str, ...]
    row: Row


def inject(dataset: str, good: pl.DataFrame, plan: Iterable[str | None]) -> tuple[pl.DataFrame, list[Labelled]]:
    """Rows for one table: the ``plan`` is a sequence of kind names (``None``: a good row), each consuming the
    next unused row of ``good`` as its donor. Returns the rows to write (in plan order, schema of ``good``) and
    their labels. A kind whose defective key would meet a key already used takes the next donor instead."""
    key = primary_key(dataset)
    donors = iter(good.iter_rows(named=True))
    rows: list[Row] = []
    labels: list[Labelled] = []
    used: set[str] = set()
    for name in plan:
        for donor in donors:
            kind = BY_NAME[name] if name else None
            made = kind.row(donor) if kind else donor
            made_key = record_key(made, key)
            if (made_key and made_key in used) or record_key(donor, key) in used:  # a null key may repeat
                continue
            used.update(k for k in (made_key, record_key(donor, key)) if k)
            if kind is None:
                labels.append(Labelled(dataset, made_key, "good", "loaded", (), made))
            elif kind.outcome == "superseded":
                labels.append(Labelled(dataset, made_key, "good", "loaded", (), donor))
                labels.append(Labelled(dataset, made_key, kind.name, kind.outcome, kind.checks, made))
                rows.append(donor)
            else:
                labels.append(Labelled(dataset, made_key, kind.name, kind.outcome, kind.checks, made))
            rows.append(made)
            break
        else:
            raise ValueError(f"{dataset}: not enough good rows for the plan")
    schema = dict(good.schema)
    return pl.DataFrame(rows, schema=schema, orient="row"), labels


def csv_bytes(frame: pl.DataFrame) -> bytes:
    """A table's rows as the education source drops them in a UTF-8 CSV."""
    return frame.drop([c for c in frame.columns if c.startswith("_")]).write_csv(
        datetime_format=CSV_TIMESTAMP).encode("utf-8")


__all__ = ["BY_NAME", "DEFECTS", "FILE_KINDS", "OUTCOMES", "ROW_KINDS", "DefectKind", "Labelled", "csv_bytes",
           "good_sims", "good_tables", "inject", "kinds_for", "primary_key", "record_key", "tables_of"]
