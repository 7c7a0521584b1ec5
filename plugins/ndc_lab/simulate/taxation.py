"""Simulated taxpayer database of the General Department of Taxation (Tax Department, Ministry of Finance), on
PostgreSQL.

Tables:
- ``taxpayers`` (no unique constraint on the key: a legacy system, so duplicate versions of a key can exist):
  ``taxpayer_id`` is the 10-digit tax code for enterprises (= ``enterprise_code`` of ``common.enterprise_base``;
  every enterprise is a taxpayer). Individuals (about 30% of the adult citizens of ``common.population_citizens``)
  are keyed by their legacy 10-digit personal tax code (2-digit province of the registering tax office, 7-digit
  serial, check digit of ``common.check_digits``) when the record was last updated before 2025-07-01
  (Việt Nam date), and by their 12-digit PIN when registered or migrated from 2025-07-01. ``pin`` is set for
  migrated individuals only; ``legacy_tax_code`` is kept after migration; people first registered from
  2025-07-01 never had one. Individuals whose record was last touched before the cut-over have a legacy code and
  no PIN (not migrated): dbt resolves them by name + birth date later. ``province_code`` is the tax office's
  province, the code in force on ``updated_at``; ``birth_date`` is null for enterprises.
- ``filings`` (key ``filing_id``): declarations, several per taxpayer: ``01/GTGT`` (VAT) and ``03/TNDN``
  (corporate income tax) by enterprises, ``02/KK-TNCN`` (personal income tax) by individuals; ``tax_period`` is
  ``YYYY-MM`` or ``YYYY-Qn`` (the month or quarter before ``filed_on``); ``declared_amount`` in whole dong, zero
  for a nil return. ``taxpayer_id`` is the taxpayer's current key (the source re-keyed a migrated individual's
  history to the PIN).
- ``payments`` (key ``payment_id``): tax paid, ``amount`` > 0 in whole dong.
The source deletes withdrawn filings outright (no tombstone column): the platform's scheduled full compare finds
them; the simulator injects nothing for that.

Ground truth beside the manifest (schema ``simulator``): ``legacy_tax_code_to_pin`` (every individual who has a
legacy code, migrated or not) and ``ambiguous_name_birth``: pairs of distinct clean citizens sharing full name and
birth date where at least one is a taxpayer without a PIN in the source, so a name + birth-date match is
ambiguous. Such pairs occur naturally (Vietnamese names are concentrated: about ten at 20,000 citizens, hundreds at
100,000, tens of thousands at 1,000,000); by construction, enough twin groups for about 0.5% of the individuals
are made certain (``constructed``): every adult living member is a taxpayer whose record predates the cut-over
(legacy code only). No twin of any group carries an injected defect, so the ambiguity reaches identity
resolution intact.

Defects (``spec.defect_count`` rows per kind and table, disjoint rows; kind -> expected outcome, check):
- taxpayers:
  ``taxpayer_id_length`` (a 10-digit code loses its last digit, a PIN gains a digit) -> quarantined,
  ``taxpayer_id_format``; ``taxpayer_id_non_digit`` (the fifth digit replaced by a letter) -> quarantined,
  ``taxpayer_id_format``; ``taxpayer_id_check_digit`` (a 10-digit code with a wrong tenth digit) -> quarantined,
  ``taxpayer_id_format``; ``pin_id_before_cutover`` (an individual keyed by PIN on a record dated before
  2025-07-01) -> quarantined, ``taxpayer_id_in_force``; ``legacy_id_after_cutover`` (an individual first
  registered from 2025-07-01 keyed by a legacy-form code) -> quarantined, ``taxpayer_id_in_force``;
  ``unknown_or_retired_province`` ('00'/'99' before the cut-over, a retired code after) -> quarantined,
  ``province_code_valid``; ``blank_name`` -> quarantined, ``full_name_not_blank``; ``duplicate_key`` (an older
  version of the key, earlier on the same UTC day) -> superseded, ``duplicate_key``; ``nfd_text`` (name in
  decomposed Unicode) -> repaired.
- filings: ``future_filed_on`` -> quarantined, ``filed_on_range``; ``negative_amount`` -> quarantined,
  ``declared_amount_non_negative``; ``orphan_taxpayer`` (a well-formed tax code that exists nowhere) -> exception.
- payments: ``future_paid_on`` -> quarantined, ``paid_on_range``; ``negative_amount`` -> quarantined,
  ``amount_positive``; ``orphan_taxpayer`` -> exception.
Filings and payments refer only to taxpayer rows that land (none of the quarantined ones), besides the orphans.

Generation is vectorised (numpy + polars, then COPY); the people come from the population simulator, so all
sources refer to the same citizens and enterprises.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
from faker.providers.person.vi_VN import Provider as PersonNames

from ndc.reference import REORGANISATION_DATE, old_codes
from ndc_lab.simulate import common
from ndc_lab.simulate import manifest as defects

UPDATED_FROM = np.datetime64("2024-07-01T00:00:00", "s")
CUTOVER_UTC = np.datetime64("2025-06-30T17:00:00", "s")  # 2025-07-01 00:00 in Việt Nam
VIETNAM_OFFSET = np.timedelta64(7 * 3600, "s")
ADULT_BORN_BY = date(2006, 7, 1)  # 18 on the first day of updates
EARLIEST_REGISTRATION = date(2000, 1, 1)
INDIVIDUAL_SHARE = 0.30
FILINGS_PER = {"enterprise": 8.0, "individual": 2.0}

ID_LENGTH = defects.Defect("taxpayer_id_length", "quarantined", "taxpayer_id_format")
ID_NON_DIGIT = defects.Defect("taxpayer_id_non_digit", "quarantined", "taxpayer_id_format")
ID_CHECK_DIGIT = defects.Defect("taxpayer_id_check_digit", "quarantined", "taxpayer_id_format")
PIN_BEFORE = defects.Defect("pin_id_before_cutover", "quarantined", "taxpayer_id_in_force")
LEGACY_AFTER = defects.Defect("legacy_id_after_cutover", "quarantined", "taxpayer_id_in_force")
FUTURE_FILED = defects.Defect("future_filed_on", "quarantined", "filed_on_range")
NEGATIVE_DECLARED = defects.Defect("negative_amount", "quarantined", "declared_amount_non_negative")
FUTURE_PAID = defects.Defect("future_paid_on", "quarantined", "paid_on_range")
NEGATIVE_PAID = defects.Defect("negative_amount", "quarantined", "amount_positive")
ORPHAN = defects.Defect("orphan_taxpayer", "exception", None)

TAXPAYER_DEFECTS = (LEGACY_AFTER, PIN_BEFORE, defects.DUPLICATE, defects.NFD, ID_CHECK_DIGIT, ID_LENGTH, ID_NON_DIGIT,
                    defects.PROVINCE, defects.BLANK_FULL_NAME)

TAXPAYER_COLUMNS = ["taxpayer_id", "taxpayer_kind", "pin", "legacy_tax_code", "full_name", "birth_date",
                    "province_code", "registered_on", "updated_at"]
FILING_COLUMNS = ["filing_id", "taxpayer_id", "tax_period", "form_code", "filed_on", "declared_amount",
                  "updated_at"]
PAYMENT_COLUMNS = ["payment_id", "taxpayer_id", "paid_on", "amount", "updated_at"]

ENTERPRISE_FORMS = ("Công ty TNHH", "Công ty Cổ phần", "Công ty TNHH MTV", "Doanh nghiệp tư nhân", "Hợp tác xã")
TRADES = ("Thương mại", "Xây dựng", "Dịch vụ", "Sản xuất", "Vận tải", "Thực phẩm", "Công nghệ", "Nông sản",
          "Du lịch", "Dược phẩm", "May mặc", "Đầu tư", "Thủy sản", "Cơ khí", "Điện tử")

SOURCE_DDL = """
drop table if exists taxpayers, filings, payments;
create table taxpayers (
    taxpayer_id varchar(16), taxpayer_kind text, pin varchar(16), legacy_tax_code varchar(16), full_name text,
    birth_date date, province_code varchar(3), registered_on date, updated_at timestamptz not null
);
create table filings (
    filing_id bigint primary key, taxpayer_id varchar(16), tax_period varchar(8), form_code text, filed_on date,
    declared_amount numeric(18, 0), updated_at timestamptz not null
);
create table payments (
    payment_id bigint primary key, taxpayer_id varchar(16), paid_on date, amount numeric(18, 0),
    updated_at timestamptz not null
);
"""
SOURCE_INDEXES = """
create index on taxpayers (updated_at); create index on taxpayers (taxpayer_id);
create index on filings (updated_at); create index on filings (taxpayer_id);
create index on payments (updated_at); create index on payments (taxpayer_id);
"""
CROSSWALK_DDL = """
drop table if exists simulator.legacy_tax_code_to_pin, simulator.ambiguous_name_birth;
create table simulator.legacy_tax_code_to_pin (legacy_tax_code text primary key, pin text not null);
create table simulator.ambiguous_name_birth (
    full_name text not null, birth_date date not null, pin_a text not null, taxpayer_id_a text,
    pin_b text not null, taxpayer_id_b text, constructed boolean not null, primary key (pin_a, pin_b)
);
"""


class _Generator(common.SourceGenerator):
    def __init__(self, spec: common.SourceSpec) -> None:
        super().__init__(spec, seed_offset=3_001)
        self.end = np.datetime64(self.until.replace(tzinfo=None), "s")
        self.taken: np.ndarray = np.empty(0, np.int64)  # first nine digits of every tax code handed out, sorted

    def moments(self, start: np.ndarray, end: np.ndarray | None = None) -> pl.Series:
        """UTC timestamps uniform in [start, end) per row (naive UTC datetime64[s] bounds)."""
        end = np.broadcast_to(self.end if end is None else end, start.shape)
        span = np.maximum((end - start).astype(np.int64), 1)
        moments = start + self.rng.integers(0, span).astype("timedelta64[s]")
        return pl.Series(moments.astype("datetime64[us]")).dt.replace_time_zone("UTC")

    def tax_codes(self, provinces: np.ndarray) -> pl.Series:
        """New 10-digit tax codes (province prefix, serial, check digit) whose first nine digits are unused."""
        prefix = provinces.astype(np.int64) * 10**7
        found = np.full(provinces.size, -1, np.int64)
        while (todo := np.flatnonzero(found < 0)).size:
            first9 = prefix[todo] + self.rng.integers(0, 10**7, todo.size)
            at = np.minimum(np.searchsorted(self.taken, first9), max(self.taken.size - 1, 0))
            ok = common.check_digits(first9) >= 0
            if self.taken.size:
                ok &= self.taken[at] != first9
            first_seen = np.zeros(todo.size, dtype=bool)
            first_seen[np.unique(first9, return_index=True)[1]] = True
            ok &= first_seen
            found[todo[ok]] = first9[ok]
            self.taken = np.sort(np.concatenate([self.taken, first9[ok]]))
        return _code_text(found)


def _code_text(first9: np.ndarray) -> pl.Series:
    if first9.size == 0:
        return pl.Series([], dtype=pl.String)
    return pl.Series(np.char.add(np.char.zfill(first9.astype(str), 9), common.check_digits(first9).astype(str)))


def _vietnam_midnight_utc(day: pl.Series) -> np.ndarray:
    return day.to_numpy().astype("datetime64[s]") - VIETNAM_OFFSET


def _random_day(gen: _Generator, low: pl.Series, high: pl.Series) -> pl.Series:
    """A date uniform in [low, high] per row (low clipped to high)."""
    low_days = low.cast(pl.Int32).to_numpy()
    high_days = high.cast(pl.Int32).to_numpy()
    low_days = np.minimum(low_days, high_days)
    return pl.Series(low_days + gen.rng.integers(0, high_days - low_days + 1)).cast(pl.Int32).cast(pl.Date)


def _mark_twins(citizens: pl.DataFrame) -> pl.DataFrame:
    """``_twin``: the citizen shares full name and birth date with another citizen."""
    return citizens.with_columns((pl.len().over("full_name", "birth_date") > 1).alias("_twin"))


def _forced_twins(gen: _Generator, citizens: pl.DataFrame, adults: int) -> pl.Series:
    """Members of a random share of the name + birth-date twin groups, enough for about 0.5% of the individuals
    to be in a constructed ambiguous pair (all of them where twins are rarer than that)."""
    groups = citizens.filter("_twin").select("full_name", "birth_date").unique().sort(
        "full_name", "birth_date")
    budget = max(1, round(0.005 * INDIVIDUAL_SHARE * adults))
    chosen = groups.with_columns(pl.Series(gen.rng.permutation(groups.height)).alias("_order")).filter(
        pl.col("_order") < budget).drop("_order")
    return citizens.join(chosen.with_columns(pl.lit(True).alias("_forced")), on=["full_name", "birth_date"],
                         how="left")["_forced"].fill_null(False)


def _individuals(gen: _Generator, citizens: pl.DataFrame) -> pl.DataFrame:
    """Individual taxpayers: ~30% of adult living citizens, plus every adult living member of a share of the
    name + birth-date twin groups (kept unmigrated, so the ambiguous match reaches identity resolution)."""
    adult = (citizens["birth_date"] <= ADULT_BORN_BY) & citizens["death_date"].is_null()
    people = citizens.with_columns(_forced_twins(gen, citizens, int(adult.sum())).alias("_forced")).filter(adult)
    people = people.filter(pl.col("_forced") | pl.Series(gen.rng.random(people.height) < INDIVIDUAL_SHARE))
    n, forced = people.height, people["_forced"].to_numpy()
    updated_at = gen.moments(np.full(n, UPDATED_FROM), np.where(forced, CUTOVER_UTC, gen.end))
    day = common.vietnam_day(updated_at)
    eighteen = people["birth_date"].dt.offset_by("18y")
    low = pl.select(pl.max_horizontal(eighteen, pl.lit(EARLIEST_REGISTRATION))).to_series()
    recent = pl.Series(gen.rng.random(n) < 0.10)
    low = pl.select(pl.when(recent).then(pl.max_horizontal(low, day.dt.offset_by("-400d"))).otherwise(low)
                    ).to_series()
    registered_on = _random_day(gen, low, day)
    has_legacy = (registered_on < REORGANISATION_DATE).to_numpy()
    legacy = np.full(n, None, dtype=object)
    legacy[has_legacy] = gen.tax_codes(people["province_code"].to_numpy()[has_legacy]).to_numpy()
    migrated = day >= REORGANISATION_DATE
    frame = people.with_columns(
        pl.Series("legacy_tax_code", legacy, dtype=pl.String), registered_on.alias("registered_on"),
        updated_at.alias("updated_at"), pl.lit("individual").alias("taxpayer_kind"),
        common.code_in_force(pl.col("province_code"), pl.lit(day)).alias("province_code"))
    return frame.with_columns(
        pl.when(migrated).then(pl.col("pin")).otherwise(pl.col("legacy_tax_code")).alias("taxpayer_id"),
        pl.when(migrated).then(pl.col("pin")).alias("pin"))


def _enterprise_names(gen: _Generator, n: int) -> np.ndarray:
    syllables = sorted(set(PersonNames.first_names_male) | set(PersonNames.first_names_female))
    name = np.char.add(np.char.add(gen.choice(syllables, n), " "), gen.choice(syllables, n))
    head = np.char.add(np.char.add(gen.choice(ENTERPRISE_FORMS, n), " "), gen.choice(TRADES, n))
    return np.char.add(np.char.add(head, " "), name)


def _enterprises(gen: _Generator, base: pl.DataFrame) -> pl.DataFrame:
    n = base.height
    start = np.maximum(_vietnam_midnight_utc(base["registered_on"]), UPDATED_FROM)
    updated_at = gen.moments(start)
    return base.select(
        pl.col("enterprise_code").alias("taxpayer_id"), pl.lit("enterprise").alias("taxpayer_kind"),
        pl.lit(None, pl.String).alias("pin"), pl.lit(None, pl.String).alias("legacy_tax_code"),
        pl.Series("full_name", _enterprise_names(gen, n)), pl.lit(None, pl.Date).alias("birth_date"),
        common.code_in_force(pl.col("province_code"), pl.lit(common.vietnam_day(updated_at))).alias("province_code"),
        "registered_on",
        updated_at.alias("updated_at"), pl.lit(False).alias("_twin"))


def _taxpayer_eligibility(frame: pl.DataFrame) -> dict[defects.Defect, np.ndarray]:
    day = common.vietnam_day(frame["updated_at"])
    individual = frame["taxpayer_kind"] == "individual"
    utc_day = frame["updated_at"].dt.date()
    duplicable = (pl.Series(common.room_for_older_version(frame["updated_at"])) & (utc_day != date(2025, 6, 30))
                  & (frame["registered_on"] < day))
    return {
        LEGACY_AFTER: (individual & (frame["registered_on"] >= REORGANISATION_DATE)).to_numpy(),
        PIN_BEFORE: (individual & (day < REORGANISATION_DATE)).to_numpy(),
        defects.DUPLICATE: duplicable.to_numpy(), defects.NFD: common.decomposes(frame["full_name"]),
        ID_CHECK_DIGIT: (frame["taxpayer_id"].str.len_chars() == 10).to_numpy(),
    }


def _pick_taxpayer_defects(gen: _Generator, frame: pl.DataFrame) -> dict[defects.Defect, list[int]]:
    k = gen.spec.defect_count(frame.height)
    picker = gen.picker(frame.height)
    untouchable = frame["_twin"].to_numpy()
    eligible = _taxpayer_eligibility(frame)
    return {defect: sorted(picker.take(k, ~untouchable & eligible.get(defect, True))) for defect in TAXPAYER_DEFECTS}


_LETTERS = {str(d): chr(ord("A") + d) for d in range(10)}


def _inject_taxpayer_defects(gen: _Generator, frame: pl.DataFrame,
                             picks: dict[defects.Defect, list[int]]) -> pl.DataFrame:
    tid = pl.col("taxpayer_id")
    n = frame.height
    fresh = pl.Series(np.full(n, None, dtype=object), dtype=pl.String)
    if picks[LEGACY_AFTER]:
        codes = gen.tax_codes(gen.choice(old_codes(), len(picks[LEGACY_AFTER])))
        fresh = fresh.scatter(picks[LEGACY_AFTER], codes)
    frame = common.set_rows(frame, picks[LEGACY_AFTER], "taxpayer_id", pl.lit(fresh))
    frame = common.set_rows(frame, picks[LEGACY_AFTER], "legacy_tax_code", pl.lit(fresh))
    frame = common.set_rows(frame, picks[LEGACY_AFTER], "pin", pl.lit(None, pl.String))
    frame = common.set_rows(frame, picks[PIN_BEFORE], "pin", pl.col("_citizen_pin"))
    frame = common.set_rows(frame, picks[PIN_BEFORE], "taxpayer_id", pl.col("_citizen_pin"))
    wrong = pl.Series(gen.rng.integers(1, 10, n))
    last = tid.str.slice(9, 1).cast(pl.Int64)
    frame = common.set_rows(frame, picks[ID_CHECK_DIGIT], "taxpayer_id",
                 tid.str.slice(0, 9) + ((last + pl.lit(wrong)) % 10).cast(pl.String))
    frame = common.set_rows(frame, picks[ID_LENGTH], "taxpayer_id",
                 pl.when(tid.str.len_chars() == 10).then(tid.str.slice(0, 9)).otherwise(tid + "0"))
    frame = common.set_rows(frame, picks[ID_NON_DIGIT], "taxpayer_id",
                 tid.str.slice(0, 4) + tid.str.slice(4, 1).replace_strict(_LETTERS, default="X") + tid.str.slice(5))
    day = pl.lit(common.vietnam_day(frame["updated_at"]))
    frame = common.set_rows(frame, picks[defects.PROVINCE], "province_code", gen.misplaced_province(day, n))
    frame = common.set_rows(frame, picks[defects.BLANK_FULL_NAME], "full_name", common.blank_text())
    return common.set_rows(frame, picks[defects.NFD], "full_name", pl.col("full_name").str.normalize("NFD"))


def _periods(filed_on: pl.Series, monthly: np.ndarray) -> pl.Series:
    """The month or quarter before the filing date, as 'YYYY-MM' or 'YYYY-Qn'."""
    month = filed_on.dt.month_start().dt.offset_by("-1d")
    quarter = filed_on.dt.truncate("1q").dt.offset_by("-1d")
    return pl.select(pl.when(pl.lit(pl.Series(monthly))).then(month.dt.strftime("%Y-%m")).otherwise(
        pl.concat_str(quarter.dt.year().cast(pl.String), pl.lit("-Q"), quarter.dt.quarter().cast(pl.String)))
    ).to_series()


def _filings(gen: _Generator, taxpayers: pl.DataFrame) -> pl.DataFrame:
    """Several filings per landed taxpayer, each after its registration, ordered by update time."""
    enterprise = (taxpayers["taxpayer_kind"] == "enterprise").to_numpy()
    per = np.where(enterprise, FILINGS_PER["enterprise"], FILINGS_PER["individual"])
    owners = np.repeat(np.arange(taxpayers.height), 1 + gen.rng.poisson(per - 1))
    m = owners.size
    registered = taxpayers["registered_on"].gather(owners)
    updated_at = gen.moments(np.maximum(_vietnam_midnight_utc(registered), UPDATED_FROM))
    day = common.vietnam_day(updated_at)
    filed_on = pl.select(pl.max_horizontal(pl.lit(day) - pl.duration(
        days=pl.lit(pl.Series(gen.rng.integers(0, 26, m)))), registered)).to_series()
    owner_is_enterprise = enterprise[owners]
    form = np.where(owner_is_enterprise, np.where(gen.rng.random(m) < 0.7, "01/GTGT", "03/TNDN"), "02/KK-TNCN")
    amount = np.where(owner_is_enterprise, gen.rng.lognormal(17.0, 1.5, m), gen.rng.lognormal(14.5, 1.2, m))
    amount = np.where(gen.rng.random(m) < 0.08, 0.0, np.round(amount))
    frame = pl.DataFrame({
        "taxpayer_id": taxpayers["taxpayer_id"].gather(owners),
        "tax_period": _periods(filed_on, gen.rng.random(m) < 0.5), "form_code": form,
        "filed_on": filed_on, "declared_amount": amount, "updated_at": updated_at})
    frame = frame.sort("updated_at", maintain_order=True)
    return frame.with_columns(pl.int_range(1, m + 1, dtype=pl.Int64).alias("filing_id")).select(FILING_COLUMNS)


def _payments(gen: _Generator, filings: pl.DataFrame) -> pl.DataFrame:
    """Payments against most non-nil filings, within a month of the filing's update."""
    due = filings.filter((pl.col("declared_amount") > 0)
                         & pl.Series(gen.rng.random(filings.height) < 0.85))
    m = due.height
    start = due["updated_at"].dt.replace_time_zone(None).to_numpy().astype("datetime64[s]")
    updated_at = gen.moments(start, np.minimum(start + np.timedelta64(30 * 86_400, "s"), gen.end))
    paid_on = pl.select(pl.max_horizontal(pl.lit(common.vietnam_day(updated_at)) - pl.duration(
        days=pl.lit(pl.Series(gen.rng.integers(0, 4, m)))), due["filed_on"])).to_series()
    share = np.where(gen.rng.random(m) < 0.7, 1.0, gen.rng.uniform(0.3, 1.0, m))
    amount = np.maximum(np.round(due["declared_amount"].to_numpy() * share), 1.0)
    frame = pl.DataFrame({"taxpayer_id": due["taxpayer_id"], "paid_on": paid_on, "amount": amount,
                          "updated_at": updated_at}).sort("updated_at", maintain_order=True)
    return frame.with_columns(pl.int_range(1, m + 1, dtype=pl.Int64).alias("payment_id")).select(PAYMENT_COLUMNS)


def _inject_activity_defects(gen: _Generator, frame: pl.DataFrame, table: str, key: str,
                             planned: tuple[tuple[defects.Defect, str, pl.Expr | pl.Series], ...]
                             ) -> tuple[pl.DataFrame, list]:
    """Pick disjoint rows per defect and set one column to a bad value; returns the frame and manifest rows."""
    frame = frame.with_row_index("_row")
    picker = gen.picker(frame.height)
    k = gen.spec.defect_count(frame.height)
    manifest = []
    for defect, column, value in planned:
        rows = sorted(picker.take(k))
        if isinstance(value, pl.Series):  # values for the chosen rows, in order
            value = pl.lit(pl.Series(np.full(frame.height, None, object), dtype=value.dtype).scatter(
                rows, value.head(len(rows))))
        frame = common.set_rows(frame, rows, column, value)
        manifest.append(defects.manifest_rows(table, frame[key].gather(rows), defect))
    return frame.drop("_row"), manifest


def _activity_defects(gen: _Generator, filings: pl.DataFrame, payments: pl.DataFrame):
    k = gen.spec.defect_count(filings.height) + gen.spec.defect_count(payments.height)
    orphans = gen.tax_codes(gen.choice(old_codes(), k))

    def later(column: str) -> pl.Expr:
        return common.vietnam_day(pl.col("updated_at")) + pl.duration(days=(pl.col(column).cast(pl.Int64) % 365) + 1)

    filings, filing_rows = _inject_activity_defects(gen, filings, "filings", "filing_id", (
        (FUTURE_FILED, "filed_on", later("filing_id")),
        (NEGATIVE_DECLARED, "declared_amount", -(pl.col("declared_amount") + 1000)),
        (ORPHAN, "taxpayer_id", orphans.head(gen.spec.defect_count(filings.height)))))
    payments, payment_rows = _inject_activity_defects(gen, payments, "payments", "payment_id", (
        (FUTURE_PAID, "paid_on", later("payment_id")),
        (NEGATIVE_PAID, "amount", -pl.col("amount")),
        (ORPHAN, "taxpayer_id", orphans.tail(gen.spec.defect_count(payments.height)))))
    return filings, payments, filing_rows + payment_rows


def _ambiguous_pairs(citizens: pl.DataFrame, individuals: pl.DataFrame) -> pl.DataFrame:
    """Pairs of clean citizens sharing name and birth date where at least one is a taxpayer without a PIN in the
    source (legacy code only); ``constructed`` marks the pairs made certain to be taxpayers."""
    twins = citizens.filter("_twin").select("pin", "full_name", "birth_date").join(
        individuals.select(pl.col("_citizen_pin").alias("pin"), "taxpayer_id", "_forced"), on="pin", how="left")
    pairs = twins.join(twins, on=["full_name", "birth_date"], suffix="_b").filter(pl.col("pin") < pl.col("pin_b"))
    unmigrated = (pl.col("taxpayer_id").str.len_chars() == 10) | (pl.col("taxpayer_id_b").str.len_chars() == 10)
    pairs = pairs.filter(unmigrated.fill_null(False))
    return pairs.select("full_name", "birth_date", pl.col("pin").alias("pin_a"),
                        pl.col("taxpayer_id").alias("taxpayer_id_a"), "pin_b", "taxpayer_id_b",
                        (pl.col("_forced") | pl.col("_forced_b")).fill_null(False).alias("constructed"),
                        ).sort("pin_a", "pin_b")


def simulate(spec: common.SourceSpec) -> common.SimulatedSource:
    gen = _Generator(spec)
    citizens = _mark_twins(common.population_citizens(spec))
    base = common.enterprise_base(spec)
    gen.taken = np.sort(base["enterprise_code"].str.slice(0, 9).cast(pl.Int64).to_numpy())
    individuals = _individuals(gen, citizens.rename({"pin": "_citizen_pin"}).with_columns(
        pl.col("_citizen_pin").alias("pin")))
    crosswalk = individuals.filter(pl.col("legacy_tax_code").is_not_null()).select(
        "legacy_tax_code", pl.col("_citizen_pin").alias("pin")).sort("legacy_tax_code")
    ambiguous = _ambiguous_pairs(citizens, individuals)
    taxpayers = pl.concat([
        individuals.select(*TAXPAYER_COLUMNS, "_twin", "_citizen_pin"),
        _enterprises(gen, base).with_columns(pl.lit(None, pl.String).alias("_citizen_pin"))],
    ).with_row_index("_row")
    picks = _pick_taxpayer_defects(gen, taxpayers)
    taxpayers = _inject_taxpayer_defects(gen, taxpayers, picks)
    landed = taxpayers.filter(~pl.col("_row").is_in(defects.quarantined_rows(picks)))
    filings = _filings(gen, landed)
    payments = _payments(gen, filings)
    filings, payments, manifest = _activity_defects(gen, filings, payments)
    losers = gen.older_versions(taxpayers, picks[defects.DUPLICATE])
    manifest += defects.picked_manifest("taxpayers", taxpayers, "taxpayer_id", picks, TAXPAYER_DEFECTS,
                                        losers["updated_at"])
    all_taxpayers = pl.concat([taxpayers, losers]).sort("_row", "updated_at").select(TAXPAYER_COLUMNS)
    return common.SimulatedSource(
        tables={"taxpayers": all_taxpayers, "filings": filings, "payments": payments},
        manifest=pl.concat([defects.empty_manifest(), *manifest]),
        crosswalks={"legacy_tax_code_to_pin": crosswalk, "ambiguous_name_birth": ambiguous})


def write(target: str, sim: common.SimulatedSource, spec: common.SourceSpec) -> None:
    """(Re)create the taxation source in the PostgreSQL database at ``target`` (created if missing)."""
    common.write_postgresql(target, "taxation", sim, spec, ddl=SOURCE_DDL, indexes=SOURCE_INDEXES,
                     crosswalk_ddl=CROSSWALK_DDL)


def default_target() -> str:
    from ndc.warehouse import connections

    return connections.resolve("ndc_src_taxation")


def describe(sim: common.SimulatedSource) -> str:
    taxpayers = sim.tables["taxpayers"]
    individuals = int((taxpayers["taxpayer_kind"] == "individual").sum())
    return (f"{taxpayers.height:,} taxpayer rows ({individuals:,} individual, {taxpayers.height - individuals:,} "
            f"enterprise), {sim.tables['filings'].height:,} filings, {sim.tables['payments'].height:,} payments")
