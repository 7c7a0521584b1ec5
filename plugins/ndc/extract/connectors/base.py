"""The connector protocol and what connectors hand to the loader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import polars as pl

from ndc.config.sources import TableConfig

# Row-based connectors size batches from the byte budget at about this many bytes per row.
BYTES_PER_ROW = 160


@dataclass(frozen=True)
class ColumnSet:
    """The columns one origin offers (a table, an API resource, a file), each with its type family
    (``text``, ``date``, ``timestamptz``, ``integer``, ``float``, ``numeric``, ``boolean``) or ``None`` where
    the origin carries no types (a CSV file: every value is text until the gate casts it)."""

    origin: str
    columns: dict[str, str | None]


@dataclass(frozen=True)
class FileRef:
    """A dropped file; it counts as loaded once its last batch commits (``ndc_meta.files``)."""

    path: str
    sha256: str
    size: int
    encoding: str


@dataclass
class Chunk:
    """One batch of source rows with the contract's columns (typed where the source has types)."""

    frame: pl.DataFrame
    completes: list[FileRef] = field(default_factory=list)  # files whose last rows this chunk holds
    origin: str = ""


@dataclass
class ExtractRequest:
    table: TableConfig
    columns: list[str]
    contract_schema: dict[str, pl.DataType]
    window: tuple[datetime, datetime]
    batch_bytes: int
    full_refresh: bool = False
    skip_files: set[str] = field(default_factory=set)  # content hashes already loaded

    @property
    def batch_rows(self) -> int:
        return max(1000, self.batch_bytes // BYTES_PER_ROW)


class Connector(Protocol):
    def column_sets(self, table: TableConfig, request: ExtractRequest | None = None) -> list[ColumnSet]:
        """What the source offers for ``table`` (for files: every file the request would load)."""
        ...

    def chunks(self, request: ExtractRequest) -> Iterator[Chunk]:
        """The rows of the request's window (incremental column in ``[start, end)``), in bounded batches."""
        ...

    def keys(self, table: TableConfig, batch_rows: int) -> Iterator[pl.DataFrame]:
        """Every current primary key of ``table`` as text columns (full compare); NotImplementedError if the
        source cannot list them."""
        ...

    def close(self) -> None:
        ...


def frame_from_rows(rows: list[tuple], columns: list[str]) -> pl.DataFrame:
    """A frame from driver rows (tuples in column order), typed from the values (the gate casts them)."""
    return pl.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)
