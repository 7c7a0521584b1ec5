"""The checks several contracts share (``ndc.contracts.base``): each defined once, named for the contract's column,
with its rule about nulls, and under the same name in a model that inherits it (a new major built on the old)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
import pytest
from pandera.typing.polars import Series

from ndc.contracts import contract_of
from ndc.contracts.base import UTC_TIMESTAMP, NdcContract
from ndc.contracts.checks import allowed, date_in_range, format_matches, not_blank, pin_format, province_code_valid
from ndc.contracts.validation import validate


class Probe(NdcContract):
    record_id: int = pa.Field(nullable=False)
    code: str = pa.Field(nullable=True)
    pin: str = pa.Field(nullable=True)
    name: str = pa.Field(nullable=True)
    kind: str = pa.Field(nullable=True)
    province_code: str = pa.Field(nullable=True)
    seen_on: date = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "probe.records"
        metadata = {"version": "1.0.0"}

    _code = format_matches("code", r"^C\d{3}$", nulls_pass=True)
    _pin = pin_format("pin")
    _name = not_blank("name")
    _kind = allowed("kind", ("a", "b"))
    _province = province_code_valid(on="updated_at")
    _seen_on = date_in_range("seen_on", date(2000, 1, 1), until="updated_at")


class ProbeV2(Probe):
    """A new major that keeps every check of the old one."""

    class Config:
        name = "probe.records"
        metadata = {"version": "2.0.0"}


GOOD = {"code": "C123", "pin": "001090123456", "name": "An", "kind": "a", "province_code": "01",
        "seen_on": date(2020, 1, 1), "updated_at": datetime(2025, 1, 1, tzinfo=UTC)}
# Each change breaks one rule; None means the row passes.
CASES = [
    ({}, None),
    ({"code": None}, None),
    ({"code": "C12"}, "code_format"),
    ({"pin": None}, "pin_format"),
    ({"pin": "099090123456"}, "pin_format"),
    ({"name": "   "}, "name_not_blank"),
    ({"name": None}, "name_not_blank"),
    ({"kind": None}, "kind_allowed"),
    ({"kind": "c"}, "kind_allowed"),
    ({"province_code": "99"}, "province_code_valid"),
    ({"seen_on": None}, "seen_on_range"),
    ({"seen_on": date(1999, 12, 31)}, "seen_on_range"),
    # 2025-01-01 00:00 UTC is 07:00 on 1 January in Việt Nam: the 2nd is still in the future.
    ({"seen_on": date(2025, 1, 2)}, "seen_on_range"),
]


def _rejected(model: type) -> dict[int, list[str]]:
    frame = pl.DataFrame([{"record_id": i, **GOOD, **change} for i, (change, _) in enumerate(CASES)],
                         schema_overrides={"updated_at": pl.Datetime("us", "UTC")})
    rejected = validate(frame, contract_of(model)).rejected
    return dict(rejected.select("record_id", "_checks").iter_rows())


@pytest.mark.parametrize("model", [Probe, ProbeV2])
def test_each_shared_check_fails_alone_under_its_name(model):
    expected = {i: [check] for i, (_, check) in enumerate(CASES) if check}
    assert _rejected(model) == expected


def test_a_shared_check_is_one_check_per_model():
    schema = Probe.to_schema()
    names = sorted([c.name for column in schema.columns.values() for c in column.checks]
                   + [c.name for c in schema.checks])
    assert names == sorted(["code_format", "pin_format", "name_not_blank", "kind_allowed", "province_code_valid",
                            "seen_on_range", "text_without_control_characters", "text_length"])
