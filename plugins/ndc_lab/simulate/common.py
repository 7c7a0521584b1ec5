"""What every simulator shares: the spec (one population size and seed drive all five sources, so they refer to
the same people) and the result (tables, defect manifest, ground-truth crosswalks)."""

from __future__ import annotations

import functools
import io
import unicodedata
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from ndc.reference import TAX_CODE_WEIGHTS


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
    import numpy as np

    from ndc.reference import old_codes

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


def decomposes(text: pl.Series) -> np.ndarray:
    """Which values change under NFD (those can carry an NFD defect)."""
    return np.array([t is not None and unicodedata.normalize("NFD", t) != t for t in text.to_list()], dtype=bool)


def nfd(value: pl.Expr) -> pl.Expr:
    return value.map_elements(lambda t: unicodedata.normalize("NFD", t), return_dtype=pl.String)


def vietnam_day(timestamp: pl.Expr) -> pl.Expr:
    """The Việt Nam calendar date of a UTC timestamp."""
    return timestamp.dt.convert_time_zone("Asia/Ho_Chi_Minh").dt.date()
