"""Simulated national business registration database (Ministry of Planning and Investment, now the Ministry of
Finance's business registration system), on MariaDB/MySQL.

Source quirks
-------------
- Engine: MariaDB. MySQL has no schemas: the connector reads the database named in the connection URL, so the
  source file keeps the registry default ``source_schema: public`` and it is ignored. Without a configured
  MariaDB (``AIRFLOW_CONN_NDC_SRC_ENTERPRISE`` unset) the same tables live in a PostgreSQL database beside the
  warehouse (the embedded default).
- Timestamps are ``DATETIME(6)`` holding UTC (the session's ``time_zone`` is ``+00:00``); ``timestamptz`` in the
  PostgreSQL fallback. Dates (registration, opening, appointment, effective dates) are Việt Nam dates.
- A legacy system: ``enterprises`` has no unique constraint on ``enterprise_code``, so two versions of one
  enterprise can be stored. Branches are closed by a soft delete: ``branches.deleted_at`` (the tombstone column,
  ~2 % of branches; ``updated_at`` moves with it).

Identifiers
-----------
- ``enterprise_code``: 10 digits = the enterprise's tax code (2-digit province of the registering tax office,
  7-digit serial, check digit over weights 31, 29, 23, 19, 17, 13, 7, 5, 3: ``10 - sum mod 11``, never 10).
  The same enterprises appear in the taxation and insurance sources (``common.enterprise_base``).
- ``branch_code``: 13 digits written ``0101234567-001``: the parent's code, ``-``, a 3-digit serial.
- ``legal_representatives.pin``: the 12-digit PIN of a real citizen of the population source.
- ``status_history.event_id``: a bigint sequence.

Tables
------
- ``enterprises`` (enterprise_code, name, legal_form tnhh/co_phan/tu_nhan/hop_danh, province_code in force on
  ``updated_at``, address, registered_on, status active/suspended/dissolved, updated_at);
- ``branches`` (branch_code PK, enterprise_code, name, province_code, address, opened_on, deleted_at, updated_at);
- ``legal_representatives`` (PK enterprise_code + pin, full_name, birth_date, role giam_doc/tong_giam_doc/chu_tich,
  appointed_on, updated_at);
- ``status_history`` (event_id PK, enterprise_code, status, effective_on, updated_at): an ``active`` event at
  registration, then suspensions, reactivations and dissolutions that end in the enterprise's current status.
Branches, representatives and status events belong to enterprises that load cleanly (an enterprise whose own row
is quarantined has none), so the only orphans are the injected ones.

Known defects (``spec.defect_count(rows)`` rows per kind and table, one defect per row; outcome -> check)
------------------------------------------------------------------------------------------------------
- enterprises: code of 9 or 11 digits, with a letter, or with a wrong check digit -> quarantined
  ``enterprise_code_format``; registered_on after the row's Việt Nam date -> quarantined ``registered_on_range``;
  unknown (``00``/``99``, before 2025-07-01) or retired (after) province code -> quarantined
  ``province_code_valid``; blank name -> quarantined ``name_not_blank``; status outside the allowed values ->
  quarantined ``status_allowed``; two versions of one code on the same UTC day -> the older ``superseded``
  (``duplicate_key``); NFD name and address -> ``repaired``.
- branches: code without the dash, with a 2-digit serial or a 9-digit parent -> quarantined ``branch_code_format``;
  unknown/retired province -> quarantined ``province_code_valid``; NFD name and address -> ``repaired``; a branch
  of an enterprise code (well-formed, valid check digit) that exists nowhere -> ``exception`` (loaded; dbt).
- legal_representatives: PIN of 11 digits or with a letter -> quarantined ``pin_format``; a well-formed PIN that
  belongs to nobody (a typo in the last six digits) -> ``exception``; NFD full name -> ``repaired``.
- status_history: effective_on after the row's Việt Nam date -> quarantined ``effective_on_range``; unknown
  status -> quarantined ``status_allowed``.
Ground truth for identity resolution: the crosswalk ``representative_pins`` (enterprise_code, recorded_pin,
true_pin) gives every representative's real PIN, including the mistyped ones.

Generation is vectorised (numpy + polars); Faker ``vi_VN`` supplies street addresses, wards and the name pools,
seeded, so a spec always gives the same database. Writing to MariaDB uses ``LOAD DATA LOCAL INFILE`` (CSV, an
unquoted ``NULL`` is NULL; any load warning is an error) and falls back to multi-row INSERTs where the server
refuses local files; to PostgreSQL, COPY. The manifest and crosswalks go beside the data: ``simulator_*`` tables
in the MySQL database (no schemas there), ``simulator.*`` in PostgreSQL.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import polars as pl
from faker.providers.person.vi_VN import Provider as PersonNames

from ndc.reference import REORGANISATION_DATE, old_codes, province_mappings
from ndc_lab.simulate import common
from ndc_lab.simulate import manifest as defects

UPDATED_FROM = datetime(2024, 7, 1, tzinfo=UTC)
LEGAL_FORMS = {"tnhh": 60, "co_phan": 25, "tu_nhan": 12, "hop_danh": 3}
FORM_PREFIX = {"tnhh": "Công ty TNHH", "co_phan": "Công ty Cổ phần", "tu_nhan": "Doanh nghiệp tư nhân",
               "hop_danh": "Công ty Hợp danh"}
STATUSES = {"active": 85, "suspended": 8, "dissolved": 7}
BAD_STATUSES = ("tam_ngung", "closed", "pending")
SECTORS = ("Thương mại", "Xây dựng", "Dịch vụ", "Đầu tư", "Sản xuất", "Vận tải", "Công nghệ", "Thực phẩm",
           "Du lịch", "Xuất nhập khẩu", "Thương mại và Dịch vụ", "Cơ khí", "Nông sản", "Dược phẩm", "May mặc",
           "Bất động sản", "Giáo dục", "Tư vấn", "Điện tử", "Logistics")
BRANCHES_PER_ENTERPRISE = {0: 60, 1: 20, 2: 10, 3: 6, 5: 4}
TOMBSTONE_SHARE = 0.02
BATCH_ROWS = 5_000

ENTERPRISE_CODE = defects.Defect("enterprise_code_format", "quarantined", "enterprise_code_format")
FUTURE_REGISTERED = defects.Defect("future_registered_on", "quarantined", "registered_on_range")
UNKNOWN_STATUS = defects.Defect("unknown_status", "quarantined", "status_allowed")
BRANCH_CODE = defects.Defect("branch_code_format", "quarantined", "branch_code_format")
ORPHAN_ENTERPRISE = defects.Defect("orphan_enterprise", "exception", None)
ORPHAN_PIN = defects.Defect("orphan_pin", "exception", None)
FUTURE_EFFECTIVE = defects.Defect("future_effective_on", "quarantined", "effective_on_range")

# One column list, two dialects: logical kind -> (MySQL/MariaDB type, PostgreSQL type).
KINDS = {
    "code": ("varchar(32)", "varchar(32)"),
    "text": ("varchar(500)", "text"),
    "date": ("date", "date"),
    "stamp": ("datetime(6)", "timestamptz"),
    "updated": ("datetime(6) not null", "timestamptz not null"),
    "id": ("bigint not null", "bigint not null"),
}


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    primary_key: tuple[str, ...] = ()  # none on enterprises: a legacy table that stores duplicate codes

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def ddl(self, dialect: int) -> str:
        body = [f"{name} {KINDS[kind][dialect]}" for name, kind in self.columns]
        if self.primary_key:
            body.append(f"primary key ({', '.join(self.primary_key)})")
        return f"create table {self.name} ({', '.join(body)})"


MYSQL, POSTGRESQL = 0, 1
TABLES = (
    Table("enterprises", (("enterprise_code", "code"), ("name", "text"), ("legal_form", "code"),
                          ("province_code", "code"), ("address", "text"), ("registered_on", "date"),
                          ("status", "code"), ("updated_at", "updated"))),
    Table("branches", (("branch_code", "code"), ("enterprise_code", "code"), ("name", "text"),
                       ("province_code", "code"), ("address", "text"), ("opened_on", "date"),
                       ("deleted_at", "stamp"), ("updated_at", "updated")), ("branch_code",)),
    Table("legal_representatives", (("enterprise_code", "code"), ("pin", "code"), ("full_name", "text"),
                                    ("birth_date", "date"), ("role", "code"), ("appointed_on", "date"),
                                    ("updated_at", "updated")), ("enterprise_code", "pin")),
    Table("status_history", (("event_id", "id"), ("enterprise_code", "code"), ("status", "code"),
                             ("effective_on", "date"), ("updated_at", "updated")), ("event_id",)),
)
COLUMNS = {table.name: table.column_names for table in TABLES}

MYSQL_MANIFEST_DDL = (
    "create table simulator_defect_manifest (table_name varchar(64) not null, record_key varchar(64) not null, "
    "kind varchar(64) not null, expected_outcome varchar(16) not null check (expected_outcome in "
    "('quarantined', 'superseded', 'repaired', 'exception')), expected_check varchar(64), row_version datetime(6))",
    "create table simulator_runs (source varchar(32), spec text, "
    "created_at datetime(6) default current_timestamp(6))",
)


class _Generator(common.SourceGenerator):
    def __init__(self, spec: common.SourceSpec) -> None:
        super().__init__(spec, seed_offset=11_003)
        faker = self.faker()
        self.wards, self.streets = self.wards_and_streets(faker)
        self.brand_first = sorted({*PersonNames.last_names, *PersonNames.middle_names} - {"Thị", "Văn"})
        self.brand_second = sorted({*PersonNames.first_names_male, *PersonNames.first_names_female})
        self.old = np.array(old_codes())
        self.old_names = {m.old_code: m.old_name for m in province_mappings()}
        self.new_names = {m.new_code: m.new_name for m in province_mappings()}

    def text(self, *parts: np.ndarray | str) -> pl.Series:
        joined = parts[0]
        for part in parts[1:]:
            joined = np.char.add(joined, part)
        return pl.Series(joined)

    def addresses(self, n: int) -> pl.Series:
        return self.text(self.choice(self.streets, n), ", ", self.choice(self.wards, n))

    def between(self, lower: pl.Series, upper: pl.Series | datetime) -> pl.Series:
        """A UTC moment (whole seconds) in [lower, upper) per row; ``lower`` itself where the span is empty."""
        frame = pl.DataFrame({"lower": lower}).with_columns(upper=pl.lit(upper).cast(lower.dtype))
        span = (frame["upper"] - frame["lower"]).dt.total_seconds().to_numpy()
        offsets = np.floor(self.rng.random(frame.height) * np.maximum(span, 0)).astype(np.int64)
        return (frame["lower"] + pl.Series(offsets * 1_000_000).cast(pl.Duration("us"))).alias("updated_at")

    def day_between(self, first: pl.Series, last: pl.Series) -> pl.Series:
        """A date in [first, last] per row."""
        span = (last - first).dt.total_days().to_numpy()
        offsets = np.floor(self.rng.random(first.len()) * (np.maximum(span, 0) + 1)).astype(np.int64)
        return _plus_days(first, offsets)


def _in_force(old: pl.Series, updated_at: pl.Series) -> pl.Series:
    """The code of each old province in force on the row's Việt Nam date."""
    return pl.select(common.code_in_force(pl.lit(old), pl.lit(common.vietnam_day(updated_at)))).to_series()


def _vn_midnight(day: pl.Series) -> pl.Series:
    """The UTC moment at which a Việt Nam date starts, not before the first simulated update."""
    start = day.cast(pl.Datetime("us")).dt.replace_time_zone("Asia/Ho_Chi_Minh").dt.convert_time_zone("UTC")
    return pl.select(pl.max_horizontal(start, pl.lit(UPDATED_FROM).cast(start.dtype))).to_series()


def _plus_days(day: pl.Series, days: np.ndarray) -> pl.Series:
    return pl.select(pl.lit(day) + pl.duration(days=pl.lit(pl.Series(days)))).to_series().alias(day.name)


def _assign(frame: pl.DataFrame, column: str, rows: list[int], values: list | pl.Series) -> pl.DataFrame:
    """Set ``column`` of the rows ``rows`` (by ``_row``) to ``values``, in order."""
    if not rows:
        return frame
    new = pl.DataFrame({"_row": pl.Series(rows, dtype=frame["_row"].dtype),
                        "_new": pl.Series(values, dtype=frame[column].dtype)})
    return (frame.join(new, on="_row", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_new", column).alias(column)).drop("_new"))


def _values(frame: pl.DataFrame, rows: list[int], column: str) -> list:
    """``column`` of the rows ``rows`` (by ``_row``), in the order of ``rows``."""
    found = dict(frame.filter(pl.col("_row").is_in(rows)).select("_row", column).iter_rows())
    return [found[row] for row in rows]


def _enterprises(gen: _Generator, base: pl.DataFrame) -> pl.DataFrame:
    n = base.height
    form = gen.choice(list(LEGAL_FORMS), n, list(LEGAL_FORMS.values()))
    prefix = np.vectorize(FORM_PREFIX.get, otypes=[object])(form).astype(str)
    updated_at = gen.between(_vn_midnight(base["registered_on"]), gen.until)
    name = gen.text(prefix, " ", gen.choice(SECTORS, n), " ", gen.choice(gen.brand_first, n), " ",
                    gen.choice(gen.brand_second, n))
    return pl.DataFrame({
        "enterprise_code": base["enterprise_code"], "name": name, "legal_form": form,
        "province_code": _in_force(base["province_code"], updated_at), "address": gen.addresses(n),
        "registered_on": base["registered_on"],
        "status": gen.choice(list(STATUSES), n, list(STATUSES.values())), "updated_at": updated_at,
    }).with_row_index("_row")


def _pick_enterprise_defects(gen: _Generator, frame: pl.DataFrame) -> dict[defects.Defect, list[int]]:
    k = gen.spec.defect_count(frame.height)
    picker = gen.picker(frame.height)
    utc_day = frame["updated_at"].dt.date()
    near_reorganisation = utc_day.is_in([date(2025, 6, 30), date(2025, 7, 1)]).to_numpy()
    duplicable = (common.room_for_older_version(frame["updated_at"]) & ~near_reorganisation
                  & (frame["registered_on"] <= utc_day).to_numpy())
    picks = {defects.DUPLICATE: picker.take(k, duplicable),
             defects.NFD: picker.take(k, common.decomposes(frame["name"]))}
    for defect in (ENTERPRISE_CODE, FUTURE_REGISTERED, defects.PROVINCE, defects.BLANK_NAME, UNKNOWN_STATUS):
        picks[defect] = picker.take(k)
    return picks


def _bad_enterprise_codes(gen: _Generator, codes: list[str]) -> list[str]:
    """Wrong length (9 or 11 digits), a letter for a digit, or a wrong check digit, in turn."""
    bad = []
    for i, code in enumerate(codes):
        kind = i % 4
        if kind == 0:
            bad.append(code[:9])
        elif kind == 1:
            bad.append(code + str(int(gen.rng.integers(0, 10))))
        elif kind == 2:
            bad.append(code[:5] + "O" + code[6:])
        else:
            bad.append(code[:9] + str((int(code[9]) + int(gen.rng.integers(1, 10))) % 10))
    return bad


def _province_defects(gen: _Generator, frame: pl.DataFrame, rows: list[int]) -> list[str]:
    """Unknown codes on rows dated before the reorganisation, retired ones after."""
    local = common.vietnam_day(pl.Series(_values(frame, rows, "updated_at"), dtype=frame["updated_at"].dtype))
    return pl.select(gen.misplaced_province(pl.lit(local), len(rows))).to_series().to_list()


def _future_dates(gen: _Generator, frame: pl.DataFrame, rows: list[int]) -> pl.Series:
    local = common.vietnam_day(pl.Series(_values(frame, rows, "updated_at"), dtype=frame["updated_at"].dtype))
    return _plus_days(local, gen.rng.integers(1, 3000, len(rows)))


def _nfd_columns(frame: pl.DataFrame, rows: list[int], columns: tuple[str, ...]) -> pl.DataFrame:
    chosen = pl.col("_row").is_in(rows)
    return frame.with_columns(pl.when(chosen).then(common.nfd(pl.col(c))).otherwise(pl.col(c)).alias(c)
                              for c in columns)


def _inject_enterprise_defects(gen: _Generator, frame: pl.DataFrame,
                               picks: dict[defects.Defect, list[int]]) -> pl.DataFrame:
    rows = picks[ENTERPRISE_CODE]
    frame = _assign(frame, "enterprise_code", rows, _bad_enterprise_codes(gen, _values(frame, rows, "enterprise_code")))
    rows = picks[FUTURE_REGISTERED]
    frame = _assign(frame, "registered_on", rows, _future_dates(gen, frame, rows))
    misplaced = picks[defects.PROVINCE]
    frame = _assign(frame, "province_code", misplaced, _province_defects(gen, frame, misplaced))
    frame = _assign(frame, "name", picks[defects.BLANK_NAME],
                    ["" if i % 2 else "   " for i in range(len(picks[defects.BLANK_NAME]))])
    frame = _assign(frame, "status", picks[UNKNOWN_STATUS],
                    [str(s) for s in gen.choice(BAD_STATUSES, len(picks[UNKNOWN_STATUS]))])
    return _nfd_columns(frame, picks[defects.NFD], ("name", "address"))


def _duplicate_losers(gen: _Generator, frame: pl.DataFrame, rows: list[int]) -> pl.DataFrame:
    """Older versions of the chosen rows: earlier on the same UTC day, at another address."""
    losers = gen.older_versions(frame, rows)
    return losers.with_columns(gen.addresses(losers.height).alias("address"))


def _status_history(gen: _Generator, parents: pl.DataFrame) -> pl.DataFrame:
    """An ``active`` event at registration, then events that end in each enterprise's current status."""
    n = parents.height
    last = common.vietnam_day(parents["updated_at"])
    first_day = gen.day_between(parents["registered_on"], last)
    second_day = gen.day_between(first_day, last)
    frame = parents.select("_row", "enterprise_code", "registered_on", "status", "updated_at").with_columns(
        first_day.alias("d1"), second_day.alias("d2"), pre=pl.Series(gen.rng.random(n) < 0.4),
        reactivated=pl.Series(gen.rng.random(n) < 0.1))
    status = pl.col("status")
    suspension = (status == "suspended") | ((status == "dissolved") & pl.col("pre")) | (
        (status == "active") & pl.col("reactivated"))
    closing = (status == "dissolved") | ((status == "active") & pl.col("reactivated"))
    events = pl.concat([
        frame.select("_row", "enterprise_code", pl.lit("active").alias("status"),
                     pl.col("registered_on").alias("effective_on"), "updated_at", pl.lit(0).alias("_seq")),
        frame.filter(suspension).select("_row", "enterprise_code", pl.lit("suspended").alias("status"),
                                        pl.col("d1").alias("effective_on"), "updated_at", pl.lit(1).alias("_seq")),
        frame.filter(closing).select("_row", "enterprise_code", "status", pl.col("d2").alias("effective_on"),
                                     "updated_at", pl.lit(2).alias("_seq")),
    ]).sort("_row", "_seq")
    stamps = gen.between(_vn_midnight(events["effective_on"]), events["updated_at"])
    return events.with_columns(stamps, pl.int_range(1, events.height + 1, dtype=pl.Int64).alias("event_id")).select(
        "event_id", "enterprise_code", "status", "effective_on", "updated_at").with_row_index("_row")


def _branches(gen: _Generator, parents: pl.DataFrame) -> pl.DataFrame:
    counts = gen.choice(list(BRANCHES_PER_ENTERPRISE), parents.height, list(BRANCHES_PER_ENTERPRISE.values()))
    counts = np.where(parents["legal_form"].is_in(["tnhh", "co_phan"]).to_numpy(), counts, counts // 3)
    owners = parents[np.repeat(np.arange(parents.height), counts)]
    m = owners.height
    updated_at = gen.between(_vn_midnight(owners["registered_on"]), gen.until)
    province = _in_force(pl.Series(gen.choice(gen.old, m)), updated_at)
    local = common.vietnam_day(updated_at)
    names = [gen.old_names[c] if day < REORGANISATION_DATE else gen.new_names[c]
             for c, day in zip(province.to_list(), local.to_list(), strict=True)]
    frame = owners.select("enterprise_code", "registered_on", pl.col("name").alias("parent")).with_columns(
        serial=pl.int_range(1, pl.len() + 1).over("enterprise_code"), province_code=province,
        province_name=pl.Series(names), address=gen.addresses(m), updated_at=updated_at)
    return frame.select(
        (pl.col("enterprise_code") + "-" + pl.col("serial").cast(pl.String).str.zfill(3)).alias("branch_code"),
        "enterprise_code", ("Chi nhánh " + pl.col("parent") + " tại " + pl.col("province_name")).alias("name"),
        "province_code", "address", gen.day_between(owners["registered_on"], local).alias("opened_on"),
        pl.lit(None, updated_at.dtype).alias("deleted_at"), "updated_at").with_row_index("_row")


def _absent_enterprise_codes(gen: _Generator, taken: set[str], k: int) -> list[str]:
    """``k`` well-formed enterprise codes (valid check digit) that no enterprise has."""
    found: list[str] = []
    while len(found) < k:
        first9 = f"{gen.choice(gen.old, 1)[0]}{int(gen.rng.integers(0, 10**7)):07d}"
        check = common.tax_code_check_digit(first9)
        code = f"{first9}{check}"
        if check is not None and first9 not in taken and code not in found:
            found.append(code)
    return found


def _bad_branch_codes(codes: list[str]) -> list[str]:
    """No dash, a 2-digit serial, or a 9-digit parent code, in turn."""
    return [(c.replace("-", ""), c[:11] + c[12:], c[:9] + c[10:])[i % 3] for i, c in enumerate(codes)]


def _inject_branch_defects(gen: _Generator, frame: pl.DataFrame, taken: set[str]
                           ) -> tuple[pl.DataFrame, dict[defects.Defect, list[int]]]:
    k = gen.spec.defect_count(frame.height) if frame.height else 0
    picker = gen.picker(frame.height)
    picks = {defect: picker.take(k) for defect in (BRANCH_CODE, defects.PROVINCE, defects.NFD, ORPHAN_ENTERPRISE)}
    tombstones = picker.take(round(TOMBSTONE_SHARE * frame.height))
    frame = _assign(frame, "deleted_at", tombstones, _values(frame, tombstones, "updated_at"))
    misplaced = picks[defects.PROVINCE]
    frame = _assign(frame, "province_code", misplaced, _province_defects(gen, frame, misplaced))
    rows = picks[BRANCH_CODE]
    frame = _assign(frame, "branch_code", rows, _bad_branch_codes(_values(frame, rows, "branch_code")))
    rows = picks[ORPHAN_ENTERPRISE]
    absent = _absent_enterprise_codes(gen, taken, len(rows))
    frame = _assign(frame, "enterprise_code", rows, absent)
    frame = _assign(frame, "branch_code", rows, [f"{code}-001" for code in absent])
    return _nfd_columns(frame, picks[defects.NFD], ("name", "address")), picks


def _representatives(gen: _Generator, parents: pl.DataFrame, citizens: pl.DataFrame) -> pl.DataFrame:
    """A director per enterprise; joint-stock companies have a general director and often a chair."""
    adults = citizens.filter((pl.col("birth_date") < date(1978, 1, 1)) & pl.col("death_date").is_null())
    pool = adults if adults.height >= 2 else citizens
    m, n = pool.height, parents.height
    first = gen.rng.integers(0, m, n)
    second = (first + 1 + gen.rng.integers(0, max(m - 1, 1), n)) % m
    joint = (parents["legal_form"] == "co_phan").to_numpy()
    chair = joint & (gen.rng.random(n) < 0.5) & (m > 1)
    role = np.where(joint, "tong_giam_doc", "giam_doc")
    people = pl.concat([
        parents.with_columns(pl.Series("_person", first), pl.Series("role", role)),
        parents.filter(pl.Series(chair)).with_columns(pl.Series("_person", second[chair]),
                                                      pl.lit("chu_tich").alias("role")),
    ])
    chosen = pool[people["_person"].to_numpy()]
    appointed = gen.day_between(people["registered_on"], common.vietnam_day(people["updated_at"]))
    updated_at = gen.between(_vn_midnight(appointed), gen.until)
    return pl.DataFrame({
        "enterprise_code": people["enterprise_code"], "pin": chosen["pin"], "full_name": chosen["full_name"],
        "birth_date": chosen["birth_date"], "role": people["role"], "appointed_on": appointed,
        "updated_at": updated_at, "_order": people["_row"],
    }).sort("_order", "role").drop("_order").with_row_index("_row")


def _absent_pins(gen: _Generator, pins: list[str], taken: set[str]) -> list[str]:
    """Each PIN with its last six digits retyped so that it belongs to nobody (birth digits kept)."""
    found: list[str] = []
    for pin in pins:
        candidate = pin
        while candidate in taken or candidate in found:
            candidate = f"{pin[:6]}{int(gen.rng.integers(0, 10**6)):06d}"
        found.append(candidate)
    return found


def _inject_representative_defects(gen: _Generator, frame: pl.DataFrame, taken: set[str]
                                   ) -> tuple[pl.DataFrame, dict[defects.Defect, list[int]]]:
    k = gen.spec.defect_count(frame.height)
    picker = gen.picker(frame.height)
    alone = (frame["enterprise_code"].is_unique()).to_numpy()  # a mistyped PIN never meets a co-director's key
    picks = {defects.PIN_FORMAT: picker.take(k, alone), ORPHAN_PIN: picker.take(k),
             defects.NFD: picker.take(k, common.decomposes(frame["full_name"]))}
    pins = _values(frame, picks[defects.PIN_FORMAT], "pin")
    frame = _assign(frame, "pin", picks[defects.PIN_FORMAT],
                    [p[:11] if i % 2 == 0 else p[:7] + "O" + p[8:] for i, p in enumerate(pins)])
    frame = _assign(frame, "pin", picks[ORPHAN_PIN],
                    _absent_pins(gen, _values(frame, picks[ORPHAN_PIN], "pin"), taken))
    return _nfd_columns(frame, picks[defects.NFD], ("full_name",)), picks


def _inject_history_defects(gen: _Generator,
                            frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[defects.Defect, list[int]]]:
    k = gen.spec.defect_count(frame.height)
    picker = gen.picker(frame.height)
    picks = {FUTURE_EFFECTIVE: picker.take(k), UNKNOWN_STATUS: picker.take(k)}
    frame = _assign(frame, "effective_on", picks[FUTURE_EFFECTIVE],
                    _future_dates(gen, frame, picks[FUTURE_EFFECTIVE]))
    frame = _assign(frame, "status", picks[UNKNOWN_STATUS],
                    [str(s) for s in gen.choice(BAD_STATUSES, len(picks[UNKNOWN_STATUS]))])
    return frame, picks


def simulate(spec: common.SourceSpec) -> common.SimulatedSource:
    gen = _Generator(spec)
    clean = _enterprises(gen, common.enterprise_base(spec))
    picks = _pick_enterprise_defects(gen, clean)
    parents = clean.filter(~pl.col("_row").is_in(defects.quarantined_rows(picks)))
    history, history_picks = _inject_history_defects(gen, _status_history(gen, parents))
    taken = {code[:9] for code in clean["enterprise_code"].to_list()}
    branches, branch_picks = _inject_branch_defects(gen, _branches(gen, parents), taken)
    citizens = common.population_citizens(spec)
    truth = _representatives(gen, parents, citizens)
    representatives, rep_picks = _inject_representative_defects(gen, truth, set(citizens["pin"].to_list()))
    enterprises = _inject_enterprise_defects(gen, clean, picks)
    losers = _duplicate_losers(gen, enterprises, picks[defects.DUPLICATE])
    rep_key = pl.concat_str("enterprise_code", "pin", separator="|")
    manifest = [
        *defects.picked_manifest("enterprises", enterprises, "enterprise_code", picks,
                         duplicate_versions=losers["updated_at"]),
        *defects.picked_manifest("branches", branches, "branch_code", branch_picks),
        *defects.picked_manifest("legal_representatives", representatives, rep_key, rep_picks),
        *defects.picked_manifest("status_history", history, "event_id", history_picks),
    ]
    tables = {
        "enterprises": pl.concat([enterprises, losers]).sort("_row", "updated_at").select(COLUMNS["enterprises"]),
        "branches": branches.select(COLUMNS["branches"]),
        "legal_representatives": representatives.select(COLUMNS["legal_representatives"]),
        "status_history": history.select(COLUMNS["status_history"]),
    }
    crosswalk = representatives.select("enterprise_code", pl.col("pin").alias("recorded_pin"),
                                       truth["pin"].alias("true_pin"))
    return common.SimulatedSource(tables, pl.concat([defects.empty_manifest(), *manifest]),
                                  {"representative_pins": crosswalk})


# --- writing ---------------------------------------------------------------------------------------------------

def _mysql_connect(url: str):
    import mysql.connector

    parts = urlsplit(url)
    conn = mysql.connector.connect(
        host=parts.hostname or "127.0.0.1", port=parts.port or 3306, user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""), use_pure=True, charset="utf8mb4", collation="utf8mb4_unicode_ci",
        autocommit=False, allow_local_infile=True)
    database = parts.path.lstrip("/")
    cursor = conn.cursor()
    cursor.execute(f"create database if not exists `{database}` character set utf8mb4 collate utf8mb4_unicode_ci")
    cursor.execute(f"use `{database}`")
    cursor.execute("set session time_zone = '+00:00'")
    return conn


def _naive_rows(frame: pl.DataFrame):
    """Rows for the MySQL driver: UTC timestamps as naive datetimes (DATETIME holds UTC)."""
    stamps = [c for c, t in frame.schema.items() if isinstance(t, pl.Datetime) and t.time_zone]
    return frame.with_columns(pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None) for c in stamps)


class _MysqlLoader:
    """Bulk loads into MariaDB/MySQL: ``LOAD DATA LOCAL INFILE`` from a CSV file, or multi-row INSERTs (batches
    of ``BATCH_ROWS`` through ``executemany``) where the server refuses local files."""

    REFUSED = {1148, 2068, 3948, 4166}  # local infile disabled by the server or rejected by the client

    def __init__(self, cursor, folder: Path) -> None:
        self.cursor, self.folder, self.local_infile = cursor, folder, True

    def load(self, table: str, frame: pl.DataFrame) -> None:
        import mysql.connector

        naive = _naive_rows(frame)
        if self.local_infile:
            try:
                return self._load_file(table, naive)
            except mysql.connector.Error as exc:
                if exc.errno not in self.REFUSED:
                    raise
                self.local_infile = False
        statement = f"insert into {table} ({', '.join(frame.columns)}) values ({', '.join(['%s'] * frame.width)})"
        for offset in range(0, naive.height, BATCH_ROWS):
            self.cursor.executemany(statement, naive.slice(offset, BATCH_ROWS).rows())
        return None

    def _load_file(self, table: str, frame: pl.DataFrame) -> None:
        path = self.folder / f"{table}.csv"
        frame.write_csv(path, include_header=False, null_value="NULL", quote_style="non_numeric",
                        datetime_format="%Y-%m-%d %H:%M:%S%.6f", line_terminator="\n")
        # An unquoted NULL is NULL, a quoted "NULL" the text; LOCAL turns data errors into warnings: refuse them.
        self.cursor.execute(
            f"load data local infile %s into table {table} character set utf8mb4 fields terminated by ',' "
            f"optionally enclosed by '\"' escaped by '' lines terminated by '\\n' ({', '.join(frame.columns)})",
            (str(path),))
        self.cursor.execute("show warnings")
        warnings = self.cursor.fetchall()
        if warnings:
            raise RuntimeError(f"loading {table} into MySQL: {warnings[:3]}")


def _crosswalk_columns(frame: pl.DataFrame) -> list[tuple[str, str]]:
    kinds = {pl.String: "code", pl.Date: "date", pl.Int64: "id"}
    return [(name, kinds[dtype]) for name, dtype in frame.schema.items()]


def _write_mysql(url: str, sim: common.SimulatedSource, spec: common.SourceSpec) -> None:
    conn = _mysql_connect(url)
    try:
        cursor = conn.cursor()
        crosswalks = [Table(f"simulator_{name}", tuple(_crosswalk_columns(frame)))
                      for name, frame in sim.crosswalks.items()]
        names = [t.name for t in (*TABLES, *crosswalks)] + ["simulator_defect_manifest", "simulator_runs"]
        cursor.execute(f"drop table if exists {', '.join(names)}")
        for table in (*TABLES, *crosswalks):
            cursor.execute(table.ddl(MYSQL) + " character set utf8mb4 collate utf8mb4_unicode_ci")
        for table in TABLES:
            cursor.execute(f"create index {table.name}_updated_at on {table.name} (updated_at)")
        for statement in MYSQL_MANIFEST_DDL:
            cursor.execute(statement)
        with tempfile.TemporaryDirectory(prefix="ndc-enterprise-") as folder:
            loader = _MysqlLoader(cursor, Path(folder))
            for table in TABLES:
                loader.load(table.name, sim.tables[table.name])
            for table, (_, frame) in zip(crosswalks, sim.crosswalks.items(), strict=True):
                loader.load(table.name, frame)
            loader.load("simulator_defect_manifest", sim.manifest)
        cursor.execute("insert into simulator_runs (source, spec) values ('enterprise', %s)", (spec.to_json(),))
        conn.commit()
        cursor.execute(f"analyze table {', '.join(t.name for t in TABLES)}")
        cursor.fetchall()
    finally:
        conn.close()


def _write_postgresql(url: str, sim: common.SimulatedSource, spec: common.SourceSpec) -> None:
    ddl = [f"drop table if exists {', '.join(t.name for t in TABLES)}", *(t.ddl(POSTGRESQL) for t in TABLES)]
    crosswalk_ddl = [statement for name, frame in sim.crosswalks.items() for statement in (
        f"drop table if exists simulator.{name}",
        Table(f"simulator.{name}", tuple(_crosswalk_columns(frame))).ddl(POSTGRESQL))]
    common.write_postgresql(url, "enterprise", sim, spec, ddl=";\n".join(ddl),
                     indexes=";\n".join(f"create index on {t.name} (updated_at)" for t in TABLES),
                     crosswalk_ddl=";\n".join(crosswalk_ddl))


def write(target: str, sim: common.SimulatedSource, spec: common.SourceSpec) -> None:
    """(Re)create the source at ``target``: ``mysql://`` (MariaDB/MySQL) or ``postgresql://`` (the fallback)."""
    from ndc.warehouse import connections

    url = connections.normalise_url(target)
    if url.startswith("mysql:"):
        _write_mysql(url, sim, spec)
    elif url.startswith("postgresql:"):
        _write_postgresql(url, sim, spec)
    else:
        from ndc.errors import ConfigError

        raise ConfigError(f"the enterprise source lives on MariaDB/MySQL or PostgreSQL, not {connections.redact(url)}")


def default_target() -> str:
    from ndc.warehouse import connections

    return connections.source_url("ndc_src_enterprise", "mysql")


def describe(sim: common.SimulatedSource) -> str:
    t = sim.tables
    return (f"{t['enterprises'].height:,} enterprise rows, {t['branches'].height:,} branches, "
            f"{t['legal_representatives'].height:,} legal representatives, "
            f"{t['status_history'].height:,} status events")


__all__ = ["default_target", "describe", "simulate", "write"]
