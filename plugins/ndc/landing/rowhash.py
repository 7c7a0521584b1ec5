"""The version hash of a row: md5 over a canonical text of its contract columns, computed by the extract (in
the thread that reads and validates, so the warehouse spends no time on it).

Canonical text: each value rendered without locale or formatting choices — dates as days since 1970-01-01,
timestamps as microseconds since the epoch (UTC), booleans as 0/1, text as is, other numbers as polars writes
them; null as NUL (which PostgreSQL text cannot hold) — each prefixed by its length in bytes, so no two different
rows share a text. The same row always gets the same hash, which is what makes reruns idempotent.

The text and its md5 are columnar (polars expressions and the ``polars-hash`` plugin's md5, in Rust): no Python
runs per row. The digest is the same as ``hashlib.md5`` over the same text (tests/landing/test_rowhash.py), so
versions hashed before this change keep their hashes.
"""

from __future__ import annotations

import polars as pl
import polars_hash as plh  # a change detector, not a security control (the ledger uses SHA-256)

HASH_COLUMN = "_ndc_row_hash"


def _text(name: str, dtype: pl.DataType) -> pl.Expr:
    value = pl.col(name)
    if dtype == pl.Date:
        value = value.cast(pl.Int32)
    elif isinstance(dtype, pl.Datetime):
        utc = value.dt.convert_time_zone("UTC") if dtype.time_zone else value
        value = utc.dt.cast_time_unit("us").cast(pl.Int64)
    elif dtype == pl.Boolean:
        value = value.cast(pl.UInt8)
    value = value.cast(pl.String).fill_null("\x00")
    return pl.concat_str(value.str.len_bytes().cast(pl.String), pl.lit(":"), value)


def row_hashes(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    """The md5 (hex) of each row's canonical text over ``columns``."""
    if frame.is_empty():
        return pl.Series(HASH_COLUMN, [], dtype=pl.String)
    text = pl.concat_str([_text(c, frame.schema[c]) for c in columns], separator="|").alias(HASH_COLUMN)
    return frame.select(text).select(plh.col(HASH_COLUMN).nchash.md5()).to_series()
