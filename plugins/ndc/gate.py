"""Gate 1: repair text to NFC (counted), validate a batch with its contract, and split it into rows that pass
and rows that go to quarantine with every check they failed.

pandera's ``failure_cases`` carries the failing row's ``index``; that is how a row is routed. A failure with no
row index (a whole-frame problem such as a column that cannot be coerced) blocks the batch instead: it cannot be
pinned on rows, so nothing of the batch is loaded and the error says which column and check failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandera.errors
import polars as pl

from ndc.contracts import Contract
from ndc.errors import NdcError

_BUILT_IN = {"not_nullable", "dtype", "coerce_dtype", "column_in_dataframe", "column_in_schema"}


@dataclass
class GateResult:
    passed: pl.DataFrame
    rejected: pl.DataFrame  # contract columns + _checks (list of names) + _reasons (JSON text)
    repaired: int


def normalise_text(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """NFC-normalise every text column; returns the frame and how many rows changed (a repair, not a reject)."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not text or frame.is_empty():
        return frame, 0
    normalised = frame.with_columns(pl.col(c).str.normalize("NFC") for c in text)
    changed = pl.any_horizontal(normalised[c].ne_missing(frame[c]) for c in text)
    return normalised, int(normalised.select(changed.sum()).item())


def _check_label(check: str, column: str | None, context: str) -> str:
    name = check.split("(")[0]
    if name in _BUILT_IN and context == "Column":
        return f"{name}({column})"
    return check


def validate(frame: pl.DataFrame, contract: Contract) -> GateResult:
    frame, repaired = normalise_text(frame)
    try:
        contract.validate(frame, lazy=True)
        return GateResult(frame, frame.clear().with_columns(
            pl.lit(None, pl.List(pl.String)).alias("_checks"), pl.lit(None, pl.String).alias("_reasons")),
            repaired)
    except pandera.errors.SchemaErrors as exc:
        failures = exc.failure_cases
    unroutable = failures.filter(pl.col("index").is_null())
    if unroutable.height:
        first = unroutable.row(0, named=True)
        raise NdcError(f"contract {contract.name} v{contract.version}: check {first['check']} failed on "
                       f"column {first['column']} for the whole batch ({first['failure_case']}); "
                       "batch blocked, nothing loaded")
    labelled = failures.with_columns(
        pl.struct("check", "column", "schema_context").map_elements(
            lambda f: _check_label(f["check"], f["column"], f["schema_context"]), return_dtype=pl.String
        ).alias("label"))
    per_row = labelled.group_by("index").agg(
        pl.col("label").unique().sort().alias("_checks"),
        pl.struct("label", "column").alias("_detail"),
    ).with_columns(
        pl.col("_detail").map_elements(
            lambda items: json.dumps({i["label"]: {"column": i["column"]} for i in items}, sort_keys=True),
            return_dtype=pl.String).alias("_reasons")
    ).drop("_detail").with_columns(pl.col("index").cast(pl.UInt32))
    indexed = frame.with_row_index("index")
    rejected = indexed.join(per_row, on="index", how="inner").drop("index")
    passed = indexed.join(per_row.select("index"), on="index", how="anti").drop("index")
    return GateResult(passed, rejected, repaired)
