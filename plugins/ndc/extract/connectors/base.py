"""The connector protocol and what connectors hand to the loader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import polars as pl

from ndc.config.sources import TableConfig
from ndc.errors import BatchBlockedError

# Row-based connectors size batches from the byte budget at about this many bytes per row.
BYTES_PER_ROW = 160


class InputLimitError(BatchBlockedError):
    """Source input over one of the connectors' limits (a dropped file too large, a Parquet file that decodes too
    large, a symbolic link in a drop folder; an API body too large, an extract past its deadline, too many pages, a
    cursor that repeats). Like any whole-batch rule it blocks the hand-off: the run's staged batches are discarded,
    nothing of it is merged, and a dropped file stays where it is, pending. The message names the file or URL, the
    limit, what was measured and the setting to change; ``check`` is ``input_limit(<setting or kind>)``;
    ``summary`` (what the ledger and alerts keep) leaves out what may quote source data, e.g. an API cursor."""

    def __init__(self, message: str, *, limit: str, summary: str | None = None) -> None:
        super().__init__(message, check=f"input_limit({limit})", summary=summary)


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
