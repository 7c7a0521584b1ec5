"""The version hash of a row: md5 over a canonical text of its contract columns, computed by the extract (in
the thread that reads and validates, so the warehouse spends no time on it).

Canonical text: each value rendered explicitly (dates ``YYYY-MM-DD``; timestamps in UTC as
``YYYY-MM-DDTHH:MM:SS.ffffff``; booleans ``true``/``false``; numbers as polars writes them; null as NUL, which
PostgreSQL text cannot hold) and prefixed by its length, so no two different rows share a text. The same row
always gets the same hash, which is what makes reruns idempotent.
"""

from __future__ import annotations

import hashlib

import polars as pl


def _text(name: str, dtype: pl.DataType) -> pl.Expr:
    value = pl.col(name)
    if dtype == pl.Date:
        value = value.dt.strftime("%Y-%m-%d")
    elif isinstance(dtype, pl.Datetime):
        utc = value.dt.convert_time_zone("UTC") if dtype.time_zone else value
        value = utc.dt.strftime("%Y-%m-%dT%H:%M:%S%.6f")
    elif dtype == pl.Boolean:
        value = pl.when(value).then(pl.lit("true")).otherwise(pl.lit("false"))
    else:
        value = value.cast(pl.String)
    value = value.fill_null("\x00")
    return pl.concat_str(value.str.len_bytes().cast(pl.String), pl.lit(":"), value)


def row_hashes(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    """The md5 (hex) of each row's canonical text over ``columns``."""
    if frame.is_empty():
        return pl.Series("_ndc_row_hash", [], dtype=pl.String)
    texts = frame.select(pl.concat_str([_text(c, frame.schema[c]) for c in columns], separator="|")).to_series()
    digests = [hashlib.md5(t.encode(), usedforsecurity=False).hexdigest() for t in texts.to_list()]
    return pl.Series("_ndc_row_hash", digests, dtype=pl.String)
