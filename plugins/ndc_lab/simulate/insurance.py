"""Simulated database of Vietnam Social Security (Bảo hiểm xã hội Việt Nam), read by the hub through a REST API.

The backend is a PostgreSQL database (``default_target()``); ``ndc_lab.simulate.insurance_api`` serves its three
tables as paginated JSON resources of the same names and fields (token auth, rate limit, injected 500s).

Tables:
- ``insured_people``: one row per insured person, keyed by the 10-digit social insurance code (``mã số BHXH``:
  2-digit code of the issuing province + 8 digits). A legacy table without a unique constraint, so a person can
  have two versions. ``pin`` is the citizen's 12-digit PIN: records updated from 2025-08-01 (Việt Nam date) carry
  it, records last updated earlier often do not (null). ``province_code`` is the residence, code in force on
  ``updated_at`` (63 old codes before 2025-07-01, 34 new ones after). ``employer_code`` is an enterprise code of
  ``common.enterprise_base`` or null for voluntary contributors. About 40 % of the population simulator's clean,
  living citizens of working age (15 to 62 on ``spec.as_of``) are insured.
- ``employers``: employer_code (= enterprise code, primary key), name, province_code (in force on updated_at);
  about 70 % of the registered enterprises.
- ``contributions``: one row per person and month paid (``contribution_month`` is the first of the month, the
  amount in VND). A cancelled contribution is soft-deleted: ``deleted_at`` is set (the tombstone, ~1 % of rows)
  and the row is still served.

Every ``updated_at`` is a UTC timestamp with microseconds between 2024-07-01 and ``spec.as_of``.

Known defects (``spec.defect_count(rows)`` rows per kind and table, disjoint; all in the manifest):
- insured_people: malformed insurance code (11 characters: a letter inserted, or a digit appended) ->
  quarantined ``insurance_code_format``; malformed PIN (11 digits, or a letter) -> ``pin_format``; future birth
  date -> ``birth_date_range``; unknown (00/99) or retired province code -> ``province_code_valid``; blank name ->
  ``full_name_not_blank``; duplicate versions of one code on one UTC day -> the older is ``superseded``
  (``duplicate_key``); decomposed (NFD) names -> ``repaired``.
- employers: unknown or retired province code -> ``province_code_valid``; blank name -> ``name_not_blank``;
  NFD names -> ``repaired``.
- contributions: contribution month after the record's own date -> ``contribution_month_range``; zero or
  negative amount -> ``amount_positive``; an insurance code that exists nowhere (well-formed) -> ``exception``
  (kept and loaded; dbt exceptions models report it).
People and employers that carry a quarantined defect are never referenced by other rows, so the only orphans
are the injected ones.

Ground truth: crosswalk ``insurance_code_to_pin`` (insurance_code as served, the person's real PIN) for every
insured person, including those whose record has no PIN; written to ``simulator.insurance_code_to_pin``.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
from faker.providers.person.vi_VN import Provider as PersonNames

from ndc.reference import old_codes
from ndc_lab.simulate import common
from ndc_lab.simulate import manifest as defects

UPDATED_FROM = datetime(2024, 7, 1, tzinfo=UTC)
PIN_FROM = date(2025, 8, 1)
FIRST_MONTH = date(2024, 7, 1)
WORKING_AGE = (15, 62)
INSURED_SHARE = 0.4
EMPLOYER_SHARE = 0.7
VOLUNTARY_SHARE = 0.15
OLD_RECORD_WITHOUT_PIN = 0.5
TOMBSTONE_SHARE = 0.01
BACKEND_DATABASE = "ndc_src_insurance_backend"

CODE_FORMAT = defects.Defect("insurance_code_format", "quarantined", "insurance_code_format")
FUTURE_MONTH = defects.Defect("future_contribution_month", "quarantined", "contribution_month_range")
AMOUNT = defects.Defect("non_positive_amount", "quarantined", "amount_positive")
ORPHAN_PERSON = defects.Defect("orphan_insurance_code", "exception", None)

PEOPLE_DEFECTS = (CODE_FORMAT, defects.PIN_FORMAT, defects.FUTURE_BIRTH, defects.PROVINCE, defects.BLANK_FULL_NAME,
                  defects.DUPLICATE, defects.NFD)
EMPLOYER_DEFECTS = (defects.PROVINCE, defects.BLANK_NAME, defects.NFD)
CONTRIBUTION_DEFECTS = (FUTURE_MONTH, AMOUNT, ORPHAN_PERSON)

PEOPLE_COLUMNS = ["insurance_code", "pin", "full_name", "birth_date", "sex", "province_code", "employer_code",
                  "updated_at"]
EMPLOYER_COLUMNS = ["employer_code", "name", "province_code", "updated_at"]
CONTRIBUTION_COLUMNS = ["contribution_id", "insurance_code", "employer_code", "contribution_month", "amount",
                        "deleted_at", "updated_at"]
PRIMARY_KEYS = {"insured_people": "insurance_code", "employers": "employer_code", "contributions": "contribution_id"}

LEGAL_FORMS = ("Công ty TNHH", "Công ty TNHH MTV", "Công ty Cổ phần", "Doanh nghiệp tư nhân", "Hợp tác xã")
SECTORS = ("Thương mại", "Xây dựng", "Dịch vụ", "Sản xuất", "Vận tải", "Công nghệ", "Thực phẩm", "May mặc",
           "Du lịch", "Cơ khí", "Nông nghiệp", "Thủy sản", "Điện tử", "Bất động sản", "Giáo dục")

# Backend tables. insured_people has no unique constraint (a legacy table: duplicate versions exist); key
# columns sort bytewise (collate "C") so the API's keyset order is the same everywhere.
SOURCE_DDL = """
drop table if exists insured_people, employers, contributions;
create table insured_people (
    insurance_code varchar(16) collate "C", pin varchar(16), full_name text, birth_date date, sex char(1),
    province_code varchar(3), employer_code varchar(10), updated_at timestamptz not null
);
create table employers (
    employer_code varchar(10) collate "C" primary key, name text, province_code varchar(3),
    updated_at timestamptz not null
);
create table contributions (
    contribution_id bigint primary key, insurance_code varchar(16) collate "C", employer_code varchar(10),
    contribution_month date, amount numeric(14, 2), deleted_at timestamptz, updated_at timestamptz not null
);
"""
SOURCE_INDEXES = """
create index on insured_people (updated_at, insurance_code);
create index on employers (updated_at, employer_code);
create index on contributions (updated_at, contribution_id);
"""
CROSSWALK_DDL = """
drop table if exists simulator.insurance_code_to_pin;
create table simulator.insurance_code_to_pin (insurance_code text not null, pin text not null);
"""


class _Generator(common.SourceGenerator):
    def __init__(self, spec: common.SourceSpec) -> None:
        super().__init__(spec, seed_offset=4_001)
        faker = self.faker()
        given = sorted({*PersonNames.first_names_male, *PersonNames.first_names_female})
        self.brands = sorted({f"{faker.random_element(given)} {faker.random_element(given)}" for _ in range(800)})

    def timestamps(self, n: int) -> pl.Series:
        """Uniform UTC timestamps (microseconds) in [2024-07-01, as_of)."""
        span = int((self.until - UPDATED_FROM).total_seconds()) * 1_000_000
        micros = self.rng.integers(0, span, n)
        moments = np.datetime64(UPDATED_FROM.replace(tzinfo=None), "us") + micros.astype("timedelta64[us]")
        return pl.Series(moments).dt.replace_time_zone("UTC")

    def digits(self, n: int, width: int) -> np.ndarray:
        if n == 0:
            return np.array([], dtype=f"<U{width}")
        return np.char.zfill(self.rng.integers(0, 10**width, n).astype(str), width)


def _malformed(column: str, at: int) -> pl.Expr:
    """Half the rows get a letter inserted at ``at``, the others a digit appended (both injective)."""
    value = pl.col(column)
    return pl.when(pl.col("_row") % 2 == 0).then(value.str.slice(0, at) + "O" + value.str.slice(at)).otherwise(
        value + "0")


# --- employers ---------------------------------------------------------------------------------------------

def _employers(gen: _Generator, enterprises: pl.DataFrame) -> pl.DataFrame:
    keep = gen.rng.random(enterprises.height) < EMPLOYER_SHARE
    keep[0] = True
    chosen = enterprises.filter(pl.Series(keep)).sort("enterprise_code")
    n = chosen.height
    names = np.char.add(np.char.add(np.char.add(np.char.add(gen.choice(LEGAL_FORMS, n), " "),
                                                gen.choice(SECTORS, n)), " "), gen.choice(gen.brands, n))
    frame = pl.DataFrame({"employer_code": chosen["enterprise_code"], "name": pl.Series(names),
                          "old_code": chosen["province_code"], "updated_at": gen.timestamps(n)})
    province = common.code_in_force(pl.col("old_code"), common.vietnam_day(pl.col("updated_at")))
    return frame.with_columns(province.alias("province_code")).select(EMPLOYER_COLUMNS).with_row_index("_row")


def _employer_defects(gen: _Generator, employers: pl.DataFrame) -> tuple[pl.DataFrame, dict[defects.Defect, list[int]]]:
    k = gen.spec.defect_count(employers.height)
    picker = gen.picker(employers.height)
    picks = {defects.NFD: picker.take(k, common.decomposes(employers["name"])), defects.PROVINCE: picker.take(k),
             defects.BLANK_NAME: picker.take(k)}
    local = common.vietnam_day(pl.col("updated_at"))
    misplaced = gen.misplaced_province(local, employers.height)
    frame = common.set_rows(employers, picks[defects.PROVINCE], "province_code", misplaced)
    frame = common.set_rows(frame, picks[defects.BLANK_NAME], "name", common.blank_text())
    return common.set_rows(frame, picks[defects.NFD], "name", common.nfd(pl.col("name"))), picks


# --- insured people ----------------------------------------------------------------------------------------

def _insured_citizens(gen: _Generator, citizens: pl.DataFrame) -> pl.DataFrame:
    as_of = gen.spec.as_of
    oldest = date(as_of.year - WORKING_AGE[1], as_of.month, as_of.day)
    youngest = date(as_of.year - WORKING_AGE[0], as_of.month, as_of.day)
    working = citizens.filter(pl.col("death_date").is_null() & pl.col("birth_date").is_between(oldest, youngest))
    return working.filter(pl.Series(gen.rng.random(working.height) < INSURED_SHARE))


def _unique_codes(gen: _Generator, prefixes: pl.Series, taken: set[str] | None = None) -> pl.Series:
    """Well-formed insurance codes (prefix + 8 digits), distinct from each other and from ``taken``."""
    taken = taken or set()
    serial = gen.digits(prefixes.len(), 8)
    while True:
        codes = pl.Series(np.char.add(prefixes.to_numpy().astype(str), serial))
        clash = (codes.is_duplicated() | codes.is_in(list(taken))).to_numpy()
        if not clash.any():
            return codes
        serial[clash] = gen.digits(int(clash.sum()), 8)


def _people(gen: _Generator, insured: pl.DataFrame, employer_codes: pl.Series) -> pl.DataFrame:
    n = insured.height
    updated_at = gen.timestamps(n)
    employed = (gen.rng.random(n) >= VOLUNTARY_SHARE) & (employer_codes.len() > 0)
    employer = pl.Series(gen.choice(employer_codes.to_numpy(), n) if employer_codes.len() else [None] * n,
                         dtype=pl.String)
    frame = insured.select(
        "pin", "full_name", "birth_date", "sex",
        pl.col("province_code").alias("old_code"),
        pl.lit(updated_at).alias("updated_at"),
        pl.when(pl.lit(pl.Series(employed))).then(pl.lit(employer)).alias("employer_code"),
        pl.lit(pl.Series(gen.rng.random(n) < OLD_RECORD_WITHOUT_PIN)).alias("_no_pin"),
    ).with_columns(_unique_codes(gen, insured["province_code"]).alias("insurance_code"))
    pin_dropped = (common.vietnam_day(pl.col("updated_at")) < PIN_FROM) & pl.col("_no_pin")
    return frame.with_columns(
        pl.col("pin").alias("_true_pin"),
        pl.when(pin_dropped).then(None).otherwise(pl.col("pin")).alias("pin"),
        common.code_in_force(pl.col("old_code"), common.vietnam_day(pl.col("updated_at"))).alias("province_code"),
    ).select(*PEOPLE_COLUMNS, "_true_pin").with_row_index("_row")


def _people_defects(gen: _Generator, people: pl.DataFrame) -> tuple[pl.DataFrame, dict[defects.Defect, list[int]]]:
    n, k = people.height, gen.spec.defect_count(people.height)
    picker = gen.picker(n)
    picks = {defects.DUPLICATE: picker.take(k, common.room_for_older_version(people["updated_at"])),
             defects.NFD: picker.take(k, common.decomposes(people["full_name"]))}
    for defect in (CODE_FORMAT, defects.PIN_FORMAT, defects.FUTURE_BIRTH, defects.PROVINCE, defects.BLANK_FULL_NAME):
        picks[defect] = picker.take(k)
    local = common.vietnam_day(pl.col("updated_at"))
    frame = common.set_rows(people, picks[CODE_FORMAT], "insurance_code", _malformed("insurance_code", 5))
    frame = common.set_rows(frame, picks[defects.PIN_FORMAT], "pin", pl.when(pl.col("_row") % 2 == 0).then(
        pl.col("_true_pin").str.slice(0, 7) + "O" + pl.col("_true_pin").str.slice(8)).otherwise(
        pl.col("_true_pin").str.slice(0, 11)))
    frame = common.set_rows(frame, picks[defects.FUTURE_BIRTH], "birth_date",
                 local + pl.duration(days=pl.lit(pl.Series(gen.rng.integers(1, 3000, n)))))
    frame = common.set_rows(frame, picks[defects.PROVINCE], "province_code", gen.misplaced_province(local, n))
    frame = common.set_rows(frame, picks[defects.BLANK_FULL_NAME], "full_name", common.blank_text())
    return common.set_rows(frame, picks[defects.NFD], "full_name", common.nfd(pl.col("full_name"))), picks


def _duplicate_losers(gen: _Generator, people: pl.DataFrame, rows: list[int]) -> pl.DataFrame:
    """Older versions of ``rows``: same UTC day, strictly earlier, another employer (or none)."""
    return gen.older_versions(people, rows).with_columns(pl.lit(None, pl.String).alias("employer_code"))


# --- contributions -----------------------------------------------------------------------------------------

def _months_between(first: date, last: date) -> int:
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _month_start(index: pl.Expr) -> pl.Expr:
    """The first day of month ``index`` counted from FIRST_MONTH."""
    total = FIRST_MONTH.year * 12 + FIRST_MONTH.month - 1 + index
    return pl.date(total // 12, total % 12 + 1, 1)


def _contributions(gen: _Generator, payers: pl.DataFrame) -> pl.DataFrame:
    """Runs of 1-12 consecutive monthly contributions per person, paid within 40 days of the month's start."""
    rng, n = gen.rng, payers.height
    months = _months_between(FIRST_MONTH, date(gen.spec.as_of.year, gen.spec.as_of.month, 1)) - 1
    last = rng.integers(0, months, n)
    count = np.minimum(rng.integers(1, 13, n), last + 1)
    employed = payers["employer_code"].is_not_null().to_numpy()
    income = np.clip(rng.lognormal(np.log(9e6), 0.5, n), 4.96e6, 46.8e6)
    amount = np.round(income * np.where(employed, 0.32, 0.22), -3)
    owner = np.repeat(np.arange(n), count)
    within = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    frame = pl.DataFrame({
        "insurance_code": payers["insurance_code"].gather(owner),
        "employer_code": payers["employer_code"].gather(owner),
        "month": np.repeat(last - count + 1, count) + within,
        "amount": amount[owner],
    }).with_columns(_month_start(pl.col("month")).alias("contribution_month"))
    start = frame["contribution_month"].cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    end = pl.Series([gen.until] * frame.height, dtype=pl.Datetime("us", "UTC"))
    left = (end - start).dt.total_microseconds().to_numpy()
    offset = (rng.random(frame.height) * np.minimum(left, 40 * 86_400 * 10**6)).astype(np.int64)
    updated_at = start + pl.Series(offset).cast(pl.Duration("us"))
    return frame.with_columns(updated_at.alias("updated_at"), pl.lit(None, pl.Datetime("us", "UTC")).alias(
        "deleted_at")).sort("updated_at").with_columns(
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("contribution_id"),
    ).select(CONTRIBUTION_COLUMNS).with_row_index("_row")


def _contribution_defects(gen: _Generator, contributions: pl.DataFrame, known: set[str]
                          ) -> tuple[pl.DataFrame, dict[defects.Defect, list[int]]]:
    n, k = contributions.height, gen.spec.defect_count(contributions.height)
    picker = gen.picker(n)
    picks = {defect: picker.take(k) for defect in CONTRIBUTION_DEFECTS}
    tombstones = picker.take(max(1, round(TOMBSTONE_SHARE * n)))
    local = common.vietnam_day(pl.col("updated_at"))
    ahead = pl.lit(pl.Series(gen.rng.integers(1, 25, n)))
    total = local.dt.year() * 12 + local.dt.month() - 1 + ahead
    month = pl.date(total // 12, total % 12 + 1, 1)
    frame = common.set_rows(contributions, picks[FUTURE_MONTH], "contribution_month", month)
    frame = common.set_rows(frame, picks[AMOUNT], "amount",
                 pl.when(pl.col("_row") % 2 == 0).then(pl.lit(0.0)).otherwise(-pl.col("amount")))
    orphans = _unique_codes(gen, pl.Series(gen.choice(old_codes(), len(picks[ORPHAN_PERSON]))), known)
    frame = frame.with_columns(frame["insurance_code"].scatter(picks[ORPHAN_PERSON], orphans))
    return common.set_rows(frame, tombstones, "deleted_at", pl.col("updated_at")), picks


# --- the source --------------------------------------------------------------------------------------------

def simulate(spec: common.SourceSpec) -> common.SimulatedSource:
    gen = _Generator(spec)
    employers, employer_picks = _employer_defects(gen, _employers(gen, common.enterprise_base(spec)))
    usable = employers.filter(~pl.col("_row").is_in(defects.quarantined_rows(employer_picks)))["employer_code"]
    people, people_picks = _people_defects(gen, _people(gen, _insured_citizens(gen, common.population_citizens(spec)),
                                                        usable))
    losers = _duplicate_losers(gen, people, people_picks[defects.DUPLICATE])
    payers = people.filter(~pl.col("_row").is_in(defects.quarantined_rows(people_picks)))
    known = set(people["insurance_code"].to_list()) | set(losers["insurance_code"].to_list())
    contributions, contribution_picks = _contribution_defects(gen, _contributions(gen, payers), known)
    manifest = [
        *defects.picked_manifest("insured_people", people, PRIMARY_KEYS["insured_people"], people_picks, PEOPLE_DEFECTS,
                         losers["updated_at"]),
        *defects.picked_manifest("employers", employers, PRIMARY_KEYS["employers"], employer_picks, EMPLOYER_DEFECTS),
        *defects.picked_manifest("contributions", contributions, PRIMARY_KEYS["contributions"], contribution_picks,
                         CONTRIBUTION_DEFECTS),
    ]
    crosswalk = people.select("insurance_code", pl.col("_true_pin").alias("pin"))
    all_people = pl.concat([people, losers]).sort("_row", "updated_at")
    return common.SimulatedSource(
        tables={"insured_people": all_people.select(PEOPLE_COLUMNS),
                "employers": employers.select(EMPLOYER_COLUMNS),
                "contributions": contributions.select(CONTRIBUTION_COLUMNS)},
        manifest=pl.concat([defects.empty_manifest(), *manifest]),
        crosswalks={"insurance_code_to_pin": crosswalk})


def write(target: str, sim: common.SimulatedSource, spec: common.SourceSpec) -> None:
    """(Re)create the backend database at ``target`` (created if missing): tables, manifest, crosswalks."""
    common.write_postgresql(target, "insurance", sim, spec, ddl=SOURCE_DDL, indexes=SOURCE_INDEXES,
                     crosswalk_ddl=CROSSWALK_DDL)


def default_target() -> str:
    """The backend database (not the API): ``NDC_INSURANCE_BACKEND_URL``, else a database beside the warehouse."""
    from ndc.settings import get_settings
    from ndc.warehouse import connections

    return os.environ.get("NDC_INSURANCE_BACKEND_URL") or connections.with_database(
        get_settings().warehouse_url, BACKEND_DATABASE)


def describe(sim: common.SimulatedSource) -> str:
    tables = sim.tables
    tombstones = tables["contributions"]["deleted_at"].is_not_null().sum()
    return (f"{tables['insured_people'].height:,} insured-person rows, {tables['employers'].height:,} employers, "
            f"{tables['contributions'].height:,} contributions ({tombstones:,} cancelled)")
