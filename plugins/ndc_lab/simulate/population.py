"""Simulated National Population Database (Ministry of Public Security), on PostgreSQL.

Tables (a legacy system: ``citizens`` has no unique constraint on the PIN, so duplicate keys can exist):
- ``citizens``: 12-digit PIN (3-digit birth-registration province, century+sex digit, 2-digit year, 6 random),
  legacy 9-digit CMND for some people born before 2000, full name, birth and death dates, sex, ethnicity,
  household, residence province (codes in force on ``updated_at``: 63 codes before 2025-07-01, 34 after), ward,
  address, ``updated_at``;
- ``households``: household id (``HK`` + 10 digits), head's PIN, province, ward, address;
- ``residence_changes``: one row per move between provinces.

Generation is vectorised (numpy + polars, then COPY): 100,000 citizens take about a second. Faker ``vi_VN``
supplies name parts, wards and street addresses, seeded, so a seed always gives the same databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
from faker.providers.person.vi_VN import Provider as PersonNames

from ndc.reference import new_codes, old_codes
from ndc_lab.simulate import common
from ndc_lab.simulate import manifest as defects

UPDATED_FROM = datetime(2024, 7, 1, tzinfo=UTC)
BIRTH_FROM, BIRTH_TO = date(1930, 1, 1), date(2024, 6, 30)
ETHNICITIES = {"Kinh": 853, "Tày": 19, "Thái": 19, "Mường": 15, "Khmer": 14, "H'Mông": 15, "Nùng": 11,
               "Hoa": 8, "Dao": 9, "Gia Rai": 5, "Ê Đê": 4, "Ba Na": 3, "Sán Dìu": 2, "Chăm": 2}
SURNAME_WEIGHTS = {"Nguyễn": 38, "Trần": 11, "Lê": 9.5, "Phạm": 7.1, "Vũ": 3.9, "Đặng": 2.1, "Bùi": 2,
                   "Dương": 1, "Hoàng": 5.1, "Phan": 4.5}

PIN_BIRTH = defects.Defect("pin_birth_consistency", "quarantined", "pin_birth_consistency")
DEATH_BEFORE_BIRTH = defects.Defect("death_before_birth", "quarantined", "death_after_birth")
CMND = defects.Defect("cmnd_format", "quarantined", "cmnd_format")
ORPHAN_HOUSEHOLD = defects.Defect("orphan_household", "exception", None)
FUTURE_MOVE = defects.Defect("future_move", "quarantined", "moved_on_range")
ORPHAN_CITIZEN = defects.Defect("orphan_citizen", "exception", None)
ORPHAN_HEAD = defects.Defect("orphan_head", "exception", None)

CITIZEN_DEFECTS = (defects.PIN_FORMAT, PIN_BIRTH, defects.FUTURE_BIRTH, DEATH_BEFORE_BIRTH, defects.PROVINCE,
                   defects.BLANK_FULL_NAME, CMND,
                   defects.DUPLICATE, defects.NFD, ORPHAN_HOUSEHOLD)

SOURCE_DDL = """
drop table if exists citizens, households, residence_changes;
create table citizens (
    pin varchar(16), cmnd varchar(12), full_name text, birth_date date, death_date date, sex char(1),
    ethnicity text, household_id varchar(16), province_code varchar(3), ward text, address text,
    updated_at timestamptz not null
);
create table households (
    household_id varchar(16) primary key, head_pin varchar(16), province_code varchar(3), ward text,
    address text, updated_at timestamptz not null
);
create table residence_changes (
    change_id bigint primary key, pin varchar(16), from_province_code varchar(3), to_province_code varchar(3),
    moved_on date, updated_at timestamptz not null
);
"""
SOURCE_INDEXES = """
create index on citizens (updated_at); create index on citizens (pin);
create index on households (updated_at); create index on residence_changes (updated_at);
"""


# The population is sized and seeded by the same spec as every other source (they are drawn from it).
PopulationSpec = common.SourceSpec


@dataclass
class SimulatedPopulation:
    citizens: pl.DataFrame
    households: pl.DataFrame
    residence_changes: pl.DataFrame
    manifest: pl.DataFrame


class _Generator(common.SourceGenerator):
    def __init__(self, spec: PopulationSpec) -> None:
        super().__init__(spec, seed_offset=0)
        faker = self.faker()
        self.wards, self.addresses = self.wards_and_streets(faker)
        self.old = np.array(old_codes())

    def timestamps(self, n: int) -> pl.Series:
        return self.uniform_moments(UPDATED_FROM, self.until, n)

    def residence(self, updated_at: pl.Series) -> pl.Series:
        """A province code in force on each record's Việt Nam date."""
        old = pl.Series(self.choice(self.old, updated_at.len()))
        return pl.select(common.code_in_force(pl.lit(old), pl.lit(common.vietnam_day(updated_at)))).to_series()

    def unique_pins(self, prefix: pl.Series, digit: pl.Series, year: pl.Series) -> pl.Series:
        n = prefix.len()
        random6 = self.rng.integers(0, 1_000_000, n)
        while True:
            pins = _pin(prefix, digit, year, pl.Series(random6))
            dup = pins.is_duplicated().to_numpy()
            if not dup.any():
                return pins
            random6[dup] = self.rng.integers(0, 1_000_000, int(dup.sum()))

    def names(self, sex: np.ndarray) -> pl.Series:
        n = sex.size
        last = self.choice(list(SURNAME_WEIGHTS), n, list(SURNAME_WEIGHTS.values()))
        middles = [m for m in PersonNames.middle_names if m != "Thị"]
        female = sex == "F"
        middle = np.where(female & (self.rng.random(n) < 0.6), "Thị",
                          np.where(~female & (self.rng.random(n) < 0.4), "Văn", self.choice(middles, n)))
        first = np.where(female, self.choice(list(PersonNames.first_names_female), n),
                         self.choice(list(PersonNames.first_names_male), n))
        return pl.Series(np.char.add(np.char.add(np.char.add(np.char.add(last, " "), middle), " "), first))

    def base_citizens(self) -> pl.DataFrame:
        """Clean citizens without PINs (PINs are derived once birth dates are final)."""
        n, rng = self.spec.citizens, self.rng
        sex = self.choice(["M", "F"], n)
        birth = pl.Series(np.datetime64(BIRTH_FROM, "D") + rng.integers(0, (BIRTH_TO - BIRTH_FROM).days, n)
                          ).cast(pl.Date)
        year = birth.dt.year().to_numpy()
        updated_at = self.timestamps(n)
        has_cmnd = pl.Series((year < 2000) & (rng.random(n) < 0.6))
        digits = pl.Series(np.char.zfill(rng.integers(0, 10**9, n).astype(str), 9))
        cmnd = pl.select(pl.when(pl.lit(has_cmnd)).then(pl.lit(digits))).to_series()
        households = max(1, n // 3)
        frame = pl.DataFrame({
            "birth_province": self.choice(self.old, n),
            "cmnd": cmnd, "full_name": self.names(sex), "birth_date": birth,
            "dies": (year < 1950) & (rng.random(n) < 0.05), "death_days": rng.integers(0, 300, n),
            "sex": sex, "ethnicity": self.choice(list(ETHNICITIES), n, list(ETHNICITIES.values())),
            "household_id": pl.Series(rng.integers(0, households, n)).cast(pl.String).str.zfill(9),
            "province_code": self.residence(updated_at), "ward": self.choice(self.wards, n),
            "address": self.choice(self.addresses, n), "updated_at": updated_at,
        })
        local = common.vietnam_day(pl.col("updated_at"))
        return frame.with_columns(
            pl.when("dies").then(local - pl.duration(days=pl.col("death_days"))).alias("death_date"),
            ("HK1" + pl.col("household_id")).alias("household_id"),
        ).drop("dies", "death_days").with_row_index("_row")

    def assign_pins(self, frame: pl.DataFrame) -> pl.DataFrame:
        year = frame["birth_date"].dt.year()
        digit = (year // 100 - 19) * 2 + (frame["sex"] == "F").cast(pl.Int32)
        pins = self.unique_pins(frame["birth_province"], digit, year)
        return frame.with_columns(pins.alias("pin")).drop("birth_province")


def _pin(prefix: pl.Series, digit: pl.Series, year: pl.Series, random6: pl.Series) -> pl.Series:
    return pl.select(pl.concat_str(
        pl.lit("0") + prefix, digit.cast(pl.String), (year % 100).cast(pl.String).str.zfill(2),
        random6.cast(pl.String).str.zfill(6))).to_series()
def _pick_defects(gen: _Generator, base: pl.DataFrame) -> dict[defects.Defect, list[int]]:
    k = gen.spec.defect_count(base.height)
    picker = gen.picker(base.height)
    no_death = base["death_date"].is_null().to_numpy()
    duplicable = no_death & common.room_for_older_version(base["updated_at"])
    picks = {defects.FUTURE_BIRTH: picker.take(k, no_death), defects.DUPLICATE: picker.take(k, duplicable),
             defects.NFD: picker.take(k, common.decomposes(base["full_name"]))}
    for defect in (defects.PIN_FORMAT, PIN_BIRTH, DEATH_BEFORE_BIRTH, defects.PROVINCE, defects.BLANK_FULL_NAME, CMND,
                   ORPHAN_HOUSEHOLD):
        picks[defect] = picker.take(k)
    return picks


def _inject_citizen_defects(gen: _Generator, base: pl.DataFrame,
                            picks: dict[defects.Defect, list[int]]) -> pl.DataFrame:
    rng, local = gen.rng, common.vietnam_day(pl.col("updated_at"))
    frame = common.set_rows(base, picks[defects.FUTURE_BIRTH], "birth_date",
                 local + pl.duration(days=pl.lit(pl.Series(rng.integers(1, 3000, base.height)))))
    frame = gen.assign_pins(frame)
    half = picks[defects.PIN_FORMAT][: len(picks[defects.PIN_FORMAT]) // 2]
    frame = common.set_rows(frame, picks[defects.PIN_FORMAT], "pin", pl.when(pl.col("_row").is_in(half))
                 .then(pl.col("pin").str.slice(0, 11))
                 .otherwise(pl.col("pin").str.slice(0, 7) + "O" + pl.col("pin").str.slice(8)))
    frame = common.set_rows(frame, picks[PIN_BIRTH], "sex",
                     pl.when(pl.col("sex") == "M").then(pl.lit("F")).otherwise(pl.lit("M")))
    frame = common.set_rows(frame, picks[DEATH_BEFORE_BIRTH], "death_date",
                 pl.col("birth_date") - pl.duration(days=pl.lit(pl.Series(rng.integers(1, 1000, base.height)))))
    frame = common.set_rows(frame, picks[defects.PROVINCE], "province_code", gen.misplaced_province(local, base.height))
    frame = common.set_rows(frame, picks[defects.BLANK_FULL_NAME], "full_name", common.blank_text())
    eight = pl.Series(np.char.zfill(rng.integers(0, 10**8, base.height).astype(str), 8))
    return common.set_rows(frame, picks[CMND], "cmnd", pl.lit(eight))


def _households(citizens: pl.DataFrame) -> pl.DataFrame:
    heads = citizens.sort("_row").group_by("household_id", maintain_order=True).first()
    return heads.select("household_id", pl.col("pin").alias("head_pin"), "province_code", "ward", "address",
                        "updated_at").sort("household_id")


def _absent_pins(gen: _Generator, pins: pl.Series, k: int) -> pl.Series:
    """``k`` well-formed PINs that belong to nobody (for orphan references)."""
    taken, found = set(pins.to_list()), {}
    while len(found) < k:
        for pin in gen.choice(pins.to_numpy(), k - len(found)):
            candidate = f"{pin[:6]}{int(gen.rng.integers(0, 1_000_000)):06d}"
            if candidate not in taken:
                found[candidate] = None
    return pl.Series(list(found)[:k])


def _residence_changes(gen: _Generator, citizens: pl.DataFrame) -> pl.DataFrame:
    m = max(1, citizens.height // 20)
    updated_at = gen.timestamps(m)
    back = pl.Series(gen.rng.integers(0, 60, m))
    frame = pl.DataFrame({"change_id": np.arange(1, m + 1, dtype=np.int64),
                          "pin": gen.choice(citizens["pin"].to_numpy(), m), "updated_at": updated_at})
    moved_on = common.vietnam_day(pl.col("updated_at")) - pl.duration(days=pl.lit(back))
    frame = frame.with_columns(moved_on.alias("moved_on"))
    codes = {column: common.code_in_force(pl.lit(pl.Series(gen.choice(gen.old, m))), pl.col("moved_on"))
             for column in ("from_province_code", "to_province_code")}
    return frame.with_columns(**codes).select("change_id", "pin", "from_province_code", "to_province_code",
                                               "moved_on", "updated_at").with_row_index("_row")


def _inject_related_defects(gen: _Generator, households: pl.DataFrame, changes: pl.DataFrame,
                            pins: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    rng, manifest = gen.rng, []
    households = households.with_row_index("_row")
    picker = gen.picker(households.height)
    kh = gen.spec.defect_count(households.height)
    bad_province, orphan_head = picker.take(kh), picker.take(kh)
    households = common.set_rows(households, bad_province, "province_code", pl.lit(common.UNKNOWN_PROVINCE_CODES[1]))
    absent = _absent_pins(gen, pins, households.height)
    households = common.set_rows(households, orphan_head, "head_pin", pl.lit(absent))
    for rows, defect in ((bad_province, defects.PROVINCE), (orphan_head, ORPHAN_HEAD)):
        manifest.append(defects.manifest_rows("households", households["household_id"].gather(rows), defect))
    picker = gen.picker(changes.height)
    kc = gen.spec.defect_count(changes.height)
    future, bad_code, orphan = picker.take(kc), picker.take(kc), picker.take(kc)
    new = pl.lit(pl.Series(gen.choice(list(new_codes()), changes.height)))
    changes = common.set_rows(changes, future, "moved_on", common.vietnam_day(pl.col("updated_at")) + pl.duration(
        days=pl.lit(pl.Series(rng.integers(1, 365, changes.height)))))
    changes = common.set_rows(common.set_rows(changes, future, "from_province_code", new), future, "to_province_code",
                              new)
    changes = common.set_rows(changes, bad_code, "to_province_code", pl.lit(common.UNKNOWN_PROVINCE_CODES[0]))
    changes = common.set_rows(changes, orphan, "pin", pl.lit(_absent_pins(gen, pins, changes.height)))
    for rows, defect in ((future, FUTURE_MOVE), (bad_code, defects.PROVINCE), (orphan, ORPHAN_CITIZEN)):
        manifest.append(defects.manifest_rows("residence_changes", changes["change_id"].gather(rows), defect))
    return households.drop("_row"), changes.drop("_row"), manifest


def _duplicate_losers(gen: _Generator, citizens: pl.DataFrame, rows: list[int]) -> pl.DataFrame:
    """Older versions of ``rows``: earlier on the same UTC day, at another address."""
    losers = gen.older_versions(citizens, rows)
    return losers.with_columns(pl.lit(pl.Series(gen.choice(gen.addresses, losers.height))).alias("address"))


CITIZEN_COLUMNS = ["pin", "cmnd", "full_name", "birth_date", "death_date", "sex", "ethnicity", "household_id",
                   "province_code", "ward", "address", "updated_at"]


def simulate(spec: PopulationSpec) -> SimulatedPopulation:
    gen = _Generator(spec)
    base = gen.base_citizens()
    picks = _pick_defects(gen, base)
    citizens = _inject_citizen_defects(gen, base, picks)
    rejected = defects.quarantined_rows(picks) + picks[ORPHAN_HOUSEHOLD]
    landing = citizens.filter(~pl.col("_row").is_in(rejected))
    households, changes, manifest = _inject_related_defects(
        gen, _households(landing), _residence_changes(gen, landing), citizens["pin"])
    citizens = common.set_rows(citizens, picks[defects.NFD], "full_name", common.nfd(pl.col("full_name")))
    citizens = common.set_rows(citizens, picks[defects.NFD], "address", common.nfd(pl.col("address")))
    orphan_ids = pl.Series([f"HK9{i:09d}" for i in gen.rng.integers(0, 10**9, citizens.height)])
    citizens = common.set_rows(citizens, picks[ORPHAN_HOUSEHOLD], "household_id", pl.lit(orphan_ids))
    losers = _duplicate_losers(gen, citizens, picks[defects.DUPLICATE])
    manifest += defects.picked_manifest("citizens", citizens, "pin", picks, CITIZEN_DEFECTS, losers["updated_at"])
    all_citizens = pl.concat([citizens, losers]).sort("_row", "updated_at").select(CITIZEN_COLUMNS)
    return SimulatedPopulation(all_citizens, households, changes.select(
        "change_id", "pin", "from_province_code", "to_province_code", "moved_on", "updated_at"),
        pl.concat([defects.empty_manifest(), *manifest]))


def write(url: str, sim: SimulatedPopulation, spec: PopulationSpec) -> None:
    """(Re)create the source system in the database at ``url`` (created if missing)."""
    tables = {"citizens": sim.citizens, "households": sim.households, "residence_changes": sim.residence_changes}
    common.write_postgresql(url, "population", common.SimulatedSource(tables, sim.manifest), spec, ddl=SOURCE_DDL,
                     indexes=SOURCE_INDEXES)


def default_target() -> str:
    from ndc.warehouse import connections

    return connections.resolve("ndc_src_population")


def describe(sim: SimulatedPopulation) -> str:
    return (f"{sim.citizens.height:,} citizen rows, {sim.households.height:,} households, "
            f"{sim.residence_changes.height:,} residence changes")
