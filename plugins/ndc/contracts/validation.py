"""Gate 1: repair text to NFC (counted), cast to the contract's types (uncastable values are rejected with
``value_type(<column>)``), validate a batch with its contract, and split it into rows that pass
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

from ndc import nfc
from ndc.contracts import Contract
from ndc.errors import ContractViolation

_BUILT_IN = {"not_nullable", "dtype", "coerce_dtype", "column_in_dataframe", "column_in_schema"}


@dataclass
class GateResult:
    passed: pl.DataFrame
    rejected: pl.DataFrame  # contract columns + _checks (list of names) + _reasons (JSON text)
    repaired: int


PK_NOT_NULL = "primary_key_not_null"


def reject_null_keys(gated: GateResult, key: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows that passed the contract but lack a key value cannot be loaded or delivered: they join the rejected
    rows with the check ``primary_key_not_null``. Returns (passed, rejected)."""
    null_key = pl.any_horizontal(pl.col(c).is_null() for c in key)
    bad = gated.passed.filter(null_key)
    if bad.is_empty():
        return gated.passed, gated.rejected
    bad = bad.with_columns(pl.lit([PK_NOT_NULL], pl.List(pl.String)).alias("_checks"),
                           pl.lit(f'{{"{PK_NOT_NULL}": {{"column": null}}}}').alias("_reasons"))
    rejected = pl.concat([gated.rejected, bad.select(gated.rejected.columns)], how="vertical_relaxed")
    return gated.passed.filter(~null_key), rejected


def normalise_text(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """NFC-normalise every text column; returns the frame and how many rows changed (a repair, not a reject).

    Only the values holding a character that NFC could change are normalised (a regex scan finds them): text from
    databases is nearly always NFC already, and normalising every value was a third of the gate's time."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not text or frame.is_empty():
        return frame, 0
    suspect = nfc.MAY_CHANGE
    flags = frame.select(pl.col(c).str.contains(suspect).fill_null(False).any().alias(c) for c in text).row(0)
    text = [c for c, flagged in zip(text, flags, strict=True) if flagged]
    if not text:
        return frame, 0
    normalised = frame.with_columns(pl.col(c).str.normalize("NFC") for c in text)
    changed = pl.any_horizontal(normalised[c].ne_missing(frame[c]) for c in text)
    return normalised, int(normalised.select(changed.sum()).item())


def _cast_expr(column: str, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    value = pl.col(column)
    if source == pl.String:
        text = value.str.strip_chars()
        # Explicit ISO formats: never a format guessed from the column's first value (one row written 30/01/2015
        # would otherwise make every ISO date of the batch uncastable).
        if target == pl.Date:
            return text.str.to_date(format="%Y-%m-%d", strict=False)
        if isinstance(target, pl.Datetime):
            forms = [text.str.to_datetime(format=f, time_unit="us", time_zone="UTC", strict=False)
                     for f in ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%#z",
                               "%Y-%m-%d %H:%M:%S%.f%#z")]
            forms += [text.str.to_datetime(format=f, time_unit="us", strict=False).dt.replace_time_zone("UTC")
                      for f in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")]
            return pl.coalesce(*forms)
        if target == pl.Boolean:
            lowered = text.str.to_lowercase()
            return pl.when(lowered.is_in(["true", "t", "1", "yes"])).then(True).when(
                lowered.is_in(["false", "f", "0", "no"])).then(False)
        return text.cast(target, strict=False)
    if isinstance(target, pl.Datetime) and isinstance(source, pl.Datetime):
        stamped = value if source.time_zone else value.dt.replace_time_zone("UTC")
        return stamped.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if target == pl.String:
        return value.cast(pl.String)
    return value.cast(target, strict=False)


def cast_to_contract(frame: pl.DataFrame, contract: Contract) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast each column to its contract type. Rows holding a value that cannot be cast (e.g. ``2015-02-30``
    read as text into a date column) are split off with check ``value_type(<column>)`` and the raw value in
    their reasons, so nothing of them is lost; the rest are returned typed, in contract order."""
    schema = contract.columns
    casts = {name: _cast_expr(name, frame.schema[name], dtype) for name, dtype in schema.items()
             if frame.schema[name] != dtype}
    if not casts:
        return frame.select(list(schema)), _empty_rejects(frame.select(list(schema)))
    typed = frame.with_columns(**{f"_cast_{n}": e for n, e in casts.items()})
    failed = {n: pl.col(n).is_not_null() & pl.col(f"_cast_{n}").is_null() for n in casts}
    typed = typed.with_columns(**{f"_bad_{n}": e for n, e in failed.items()})
    any_bad = pl.any_horizontal(pl.col(f"_bad_{n}") for n in casts)
    bad = typed.filter(any_bad)
    good = typed.filter(~any_bad).with_columns(**{n: pl.col(f"_cast_{n}") for n in casts}).select(list(schema))
    if bad.is_empty():
        return good, _empty_rejects(good)
    checks, reasons = [], []
    for row in bad.iter_rows(named=True):
        labels = {f"value_type({n})": {"column": n, "value": str(row[n]),
                                      "expected": str(schema[n])} for n in casts if row[f"_bad_{n}"]}
        checks.append(sorted(labels))
        reasons.append(json.dumps(labels, sort_keys=True, ensure_ascii=False))
    rejected = bad.with_columns(**{n: pl.col(f"_cast_{n}") for n in casts}).select(list(schema)).with_columns(
        pl.Series("_checks", checks, dtype=pl.List(pl.String)), pl.Series("_reasons", reasons, dtype=pl.String))
    return good, rejected


def _empty_rejects(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.clear().with_columns(pl.lit(None, pl.List(pl.String)).alias("_checks"),
                                      pl.lit(None, pl.String).alias("_reasons"))


def _check_label(check: str, column: str | None, context: str) -> str:
    name = check.split("(")[0]
    if name in _BUILT_IN and context == "Column":
        return f"{name}({column})"
    return check


def validate(frame: pl.DataFrame, contract: Contract) -> GateResult:
    frame, repaired = normalise_text(frame)
    frame, uncastable = cast_to_contract(frame, contract)
    result = _validate_typed(frame, contract)
    if uncastable.height:
        result.rejected = pl.concat([result.rejected, uncastable], how="vertical_relaxed")
    result.repaired = repaired
    return result


def _validate_typed(frame: pl.DataFrame, contract: Contract) -> GateResult:
    try:
        contract.validate(frame, lazy=True)
        return GateResult(frame, _empty_rejects(frame), 0)
    except pandera.errors.SchemaErrors as exc:
        failures = exc.failure_cases
    unroutable = failures.filter(pl.col("index").is_null())
    if unroutable.height:
        first = unroutable.row(0, named=True)
        where = (f"contract {contract.name} v{contract.version}: check {first['check']} failed on column "
                 f"{first['column']} for the whole batch")
        raise ContractViolation(
            f"{where} ({first['failure_case']}); batch blocked, nothing loaded",
            # what the ledger keeps: pandera's failure case can be a row's value
            summary=f"{where}; batch blocked, nothing loaded", dataset=contract.name, check=str(first["check"]))
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
    return GateResult(passed, rejected, 0)
