"""Reference data. Administrative units: the effective-dated province codes (63 until 2025-06-30, 34 from
2025-07-01); and the tax code's check-digit weights.

``provinces_2025.csv`` maps every old code to the province it merged into (Resolution 202/2025/QH15; a merged
province keeps the code of the province holding its seat; codes are never reused).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib.resources import files

REORGANISATION_DATE = date(2025, 7, 1)
# A tax code (an enterprise code, or a legacy personal tax code) is 9 digits and a check digit:
# 10 - (sum of digit x weight) mod 11, where 10 admits no valid code.
TAX_CODE_WEIGHTS = (31, 29, 23, 19, 17, 13, 7, 5, 3)


@dataclass(frozen=True)
class ProvinceMapping:
    old_code: str
    old_name: str
    new_code: str
    new_name: str


@cache
def province_mappings() -> tuple[ProvinceMapping, ...]:
    text = files("ndc.reference").joinpath("provinces_2025.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines())
    return tuple(ProvinceMapping(r["old_code"], r["old_name"], r["new_code"], r["new_name"]) for r in rows)


@cache
def old_codes() -> tuple[str, ...]:
    """The 63 codes valid until 2025-06-30."""
    return tuple(sorted({m.old_code for m in province_mappings()}))


@cache
def new_codes() -> tuple[str, ...]:
    """The 34 codes valid from 2025-07-01."""
    return tuple(sorted({m.new_code for m in province_mappings()}))


@cache
def current_code_of() -> dict[str, str]:
    """Old code -> the code of the province it belongs to from 2025-07-01."""
    return {m.old_code: m.new_code for m in province_mappings()}
