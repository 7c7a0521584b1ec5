"""What every simulator shares: the spec (one population size and seed drive all five sources, so they refer to
the same people) and the result (tables, defect manifest, ground-truth crosswalks)."""

from __future__ import annotations

import functools
import io
import json
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import polars as pl

from ndc.reference import REORGANISATION_DATE, TAX_CODE_WEIGHTS, current_code_of, new_codes, old_codes
from ndc_lab.simulate.manifest import MANIFEST_DDL

if TYPE_CHECKING:
    from faker import Faker

UNKNOWN_PROVINCE_CODES = ("00", "99")  # no province has ever had them


@dataclass(frozen=True)
class SourceSpec:
    """Scale and randomness of a simulated source. ``citizens`` sizes every source (taxpayers, insured people,
    students and enterprises are drawn from, or scaled to, the same population)."""

    citizens: int = 100_000
    seed: int = 42
    defect_rate: float = 0.001
    as_of: date = date(2026, 1, 1)

    def defect_count(self, rows: int) -> int:
        return max(1, round(self.defect_rate * rows)) if self.defect_rate > 0 else 0

    def to_json(self) -> str:
        """The spec as each source records it in its ``runs`` table."""
        return json.dumps(asdict(self), default=str)


@dataclass
class SimulatedSource:
    """A simulated national database: its tables (as the source holds them), the manifest of injected defects
    (``ndc_lab.simulate.manifest``) and ground-truth crosswalks (e.g. legacy identifier -> PIN) for tests."""

    tables: dict[str, pl.DataFrame]
    manifest: pl.DataFrame
    crosswalks: dict[str, pl.DataFrame] = field(default_factory=dict)


def copy_frame_pg(conn, table: str, frame: pl.DataFrame) -> None:
    """COPY a frame into a PostgreSQL table (column names from the frame; they are the simulator's own)."""
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False)
    columns = ", ".join(frame.columns)
    with conn.cursor().copy(f"copy {table} ({columns}) from stdin (format csv)") as copy:
        copy.write(buffer.getbuffer())


def write_postgresql(url: str, source: str, sim: SimulatedSource, spec: SourceSpec, *, ddl: str, indexes: str = "",
                     crosswalk_ddl: str = "") -> None:
    """(Re)create a simulated source in the PostgreSQL database at ``url`` (created if missing): ``ddl`` makes its
    tables, which get their rows and then ``indexes``; the defect manifest, ``crosswalk_ddl`` and the crosswalks
    go to schema ``simulator``, with a row in ``simulator.runs`` naming ``source`` and the spec."""
    import psycopg

    from ndc.warehouse.database import ensure_database

    ensure_database(url)
    with psycopg.connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        conn.execute(ddl)
        for name, frame in sim.tables.items():
            copy_frame_pg(conn, name, frame)
        if indexes:
            conn.execute(indexes)
        conn.execute(MANIFEST_DDL)
        copy_frame_pg(conn, "simulator.defect_manifest", sim.manifest)
        if crosswalk_ddl:
            conn.execute(crosswalk_ddl)
        for name, frame in sim.crosswalks.items():
            copy_frame_pg(conn, f"simulator.{name}", frame)
        conn.execute("insert into simulator.runs (source, spec) values (%s, %s)", (source, spec.to_json()))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")


def check_digits(first9: np.ndarray) -> np.ndarray:
    """The tax-code check digit of each 9-digit number (``ndc.reference.TAX_CODE_WEIGHTS``); -1 where no digit
    is valid."""
    digits = (first9[:, None] // 10 ** np.arange(8, -1, -1)) % 10
    digit = 10 - (digits * np.array(TAX_CODE_WEIGHTS)).sum(axis=1) % 11
    return np.where(digit == 10, -1, digit % 10)


def tax_code_check_digit(first9: str) -> int | None:
    """The tenth digit of a Vietnamese tax code (enterprise or personal); None when no digit is valid."""
    digit = int(check_digits(np.array([int(first9)], dtype=np.int64))[0])
    return None if digit < 0 else digit


@functools.lru_cache(maxsize=2)
def population_citizens(spec: SourceSpec) -> pl.DataFrame:
    """The population simulator's citizens that are clean (no injected defect besides NFD text, one row per PIN):
    the people every other source refers to. Columns: pin, cmnd, full_name, birth_date, death_date, sex,
    province_code. Deterministic for the spec (it reruns the population simulator, ~1 s per 100,000)."""
    from ndc_lab.simulate import population

    sim = population.simulate(spec)
    flawed = sim.manifest.filter((pl.col("table_name") == "citizens")
                                 & (pl.col("expected_outcome") != "repaired"))["record_key"]
    clean = sim.citizens.filter(~pl.col("pin").is_in(flawed.implode())).unique("pin", keep="last",
                                                                                maintain_order=True)
    return clean.select(
        "pin", "cmnd",
        pl.col("full_name").str.normalize("NFC"),
        "birth_date", "death_date", "sex", "province_code")


def enterprise_base(spec: SourceSpec) -> pl.DataFrame:
    """The registered enterprises every source agrees on: ``enterprise_code`` (10 digits = tax code: 2-digit
    province of the registering tax office, 7-digit serial, check digit), ``province_code`` (old code of
    registration) and ``registered_on``. ``max(10, citizens // 50)`` of them, deterministic for the spec."""
    n = max(10, spec.citizens // 50)
    rng = np.random.default_rng(spec.seed + 7_001)
    codes, provinces, seen = [], [], set()
    old = old_codes()
    while len(codes) < n:
        province = old[int(rng.integers(0, len(old)))]
        first9 = f"{province}{int(rng.integers(0, 10**7)):07d}"
        check = tax_code_check_digit(first9)
        if check is None or first9 in seen:
            continue
        seen.add(first9)
        codes.append(f"{first9}{check}")
        provinces.append(province)
    days = rng.integers(0, (date(2025, 12, 1) - date(1995, 1, 1)).days, n)
    registered = pl.Series(np.datetime64(date(1995, 1, 1), "D") + days).cast(pl.Date)
    return pl.DataFrame({"enterprise_code": codes, "province_code": provinces, "registered_on": registered})


# --- helpers every simulator uses to inject defects ------------------------------------------------------------

class Picker:
    """Disjoint random row choices, so every defect row carries exactly one defect."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.order = rng.permutation(n)
        self.used = np.zeros(n, dtype=bool)

    def take(self, k: int, eligible: np.ndarray | None = None) -> list[int]:
        ok = ~self.used[self.order]
        if eligible is not None:
            ok &= eligible[self.order]
        chosen = self.order[ok][:k]
        self.used[chosen] = True
        return chosen.tolist()


def set_rows(frame: pl.DataFrame, rows: list[int], column: str, value: pl.Expr) -> pl.DataFrame:
    """``column`` set to ``value`` on the rows whose ``_row`` is in ``rows``."""
    return frame.with_columns(pl.when(pl.col("_row").is_in(rows)).then(value).otherwise(pl.col(column))
                              .alias(column))


def second_of_day(stamp: pl.Series) -> np.ndarray:
    """Seconds since midnight UTC (a duplicate's older version stays within the same daily interval)."""
    return (stamp - stamp.dt.truncate("1d")).dt.total_seconds().to_numpy()


def room_for_older_version(stamp: pl.Series) -> np.ndarray:
    """Which rows ``SourceGenerator.older_versions`` can give an older version on the same UTC day."""
    return second_of_day(stamp) >= 2


def blank_text(white_space: str = "   ") -> pl.Expr:
    """Text that a not-blank check must reject: empty on even ``_row`` values, only ``white_space`` on odd ones."""
    return pl.when(pl.col("_row") % 2 == 0).then(pl.lit("")).otherwise(pl.lit(white_space))


def decomposes(text: pl.Series) -> np.ndarray:
    """Which values change under NFD (those can carry an NFD defect)."""
    return np.array([t is not None and unicodedata.normalize("NFD", t) != t for t in text.to_list()], dtype=bool)


def nfd(value: pl.Expr) -> pl.Expr:
    return value.map_elements(lambda t: unicodedata.normalize("NFD", t), return_dtype=pl.String)


Timestamps = TypeVar("Timestamps", pl.Expr, pl.Series)


def vietnam_day(timestamp: Timestamps) -> Timestamps:
    """The Việt Nam calendar date of a UTC timestamp (a column expression or a series)."""
    return timestamp.dt.convert_time_zone("Asia/Ho_Chi_Minh").dt.date()


# --- province codes: which one is in force on a date, and which ones a contract must reject -------------------

def code_in_force(old: pl.Expr, day: pl.Expr) -> pl.Expr:
    """The code in force on the Việt Nam date ``day`` of the province known by its ``old`` code: the old code
    before the 2025 reorganisation, the code of the province it joined from then on."""
    return pl.when(day < REORGANISATION_DATE).then(old).otherwise(old.replace_strict(current_code_of(), default=old))


def retired_codes() -> list[str]:
    """The old province codes that no province has from the reorganisation on."""
    return sorted(set(old_codes()) - set(new_codes()))


# --- the draws of one source ------------------------------------------------------------------------------------

class SourceGenerator:
    """The random draws of one simulated source, and the draws every source's defect injection shares. Each source
    seeds its own generator with the spec's seed plus a fixed offset of its own, so the sources draw independently
    and a spec always gives the same data."""

    def __init__(self, spec: SourceSpec, seed_offset: int) -> None:
        self.spec = spec
        self.seed = spec.seed + seed_offset
        self.rng = np.random.default_rng(self.seed)
        self.until = datetime.combine(spec.as_of, datetime.min.time(), UTC)  # no record is updated after it

    def faker(self) -> Faker:
        """Faker ``vi_VN`` seeded like the source (for name parts, wards and addresses)."""
        from faker import Faker

        faker = Faker("vi_VN")
        faker.seed_instance(self.seed)
        return faker

    @staticmethod
    def ward_names(faker: Faker) -> list[str]:
        return sorted({f"{faker.commune_prefix()} {faker.commune_name()}" for _ in range(600)})

    @classmethod
    def wards_and_streets(cls, faker: Faker) -> tuple[list[str], list[str]]:
        """Ward names, then street addresses (house number and street), each drawn from ``faker`` once."""
        wards = cls.ward_names(faker)
        return wards, sorted({faker.street_address() for _ in range(3000)})

    def choice(self, values, n: int, weights=None) -> np.ndarray:
        p = None if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
        return self.rng.choice(np.asarray(values), size=n, p=p)

    def picker(self, n: int) -> Picker:
        return Picker(self.rng, n)

    def uniform_moments(self, start: datetime, end: datetime, n: int) -> pl.Series:
        """``n`` UTC timestamps in whole seconds, uniform in [start, end)."""
        seconds = self.rng.integers(0, int((end - start).total_seconds()), n)
        moments = np.datetime64(start.replace(tzinfo=None), "s") + seconds.astype("timedelta64[s]")
        return pl.Series(moments.astype("datetime64[us]")).dt.replace_time_zone("UTC")

    def older_versions(self, frame: pl.DataFrame, rows: list[int], stamp: str = "updated_at") -> pl.DataFrame:
        """The rows ``rows`` (by ``_row``, in row order) with ``stamp`` moved back by a whole number of seconds,
        staying on the same UTC day: the older version of a duplicated key, which the newer row supersedes. The
        rows must have room for it (``room_for_older_version``)."""
        winners = frame.filter(pl.col("_row").is_in(rows)).sort("_row")
        earlier = self.rng.integers(1, np.maximum(second_of_day(winners[stamp]), 2))
        return winners.with_columns(pl.col(stamp) - pl.duration(seconds=pl.lit(pl.Series(earlier))))

    def misplaced_province(self, day: pl.Expr, n: int, *, unknown_first: bool = False) -> pl.Expr:
        """A province code that the contracts reject on the Việt Nam date ``day`` of each of ``n`` rows: a retired
        code from the reorganisation on, an unknown one before. Both are drawn for every row; ``unknown_first``
        only sets the order of the draws (part of what a seed produces)."""
        if unknown_first:
            unknown = self.choice(UNKNOWN_PROVINCE_CODES, n)
            retired = self.choice(retired_codes(), n)
        else:
            retired = self.choice(retired_codes(), n)
            unknown = self.choice(UNKNOWN_PROVINCE_CODES, n)
        return pl.when(day >= REORGANISATION_DATE).then(pl.lit(pl.Series(retired))).otherwise(
            pl.lit(pl.Series(unknown)))
