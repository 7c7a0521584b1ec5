"""File-drop sources (the education database): CSV and Parquet files in a landing folder.

The URL is ``file:///path/to/drop``; a table's files are ``<source_table>/**/*.csv|.parquet`` under it (or the
table's ``file_glob``). Each file is loaded exactly once, tracked by the SHA-256 of its content in
``ndc_meta.files`` (recorded in the transaction of the file's last batch): a renamed copy is not loaded twice,
a changed file is a new file. CSV files are decoded as UTF-8 (a BOM is dropped) or, when not valid UTF-8, with
the source's ``legacy_encoding`` (e.g. Windows-1258, which stores Vietnamese tone marks as combining
characters; the gate then normalises to NFC and counts the repair). CSV values arrive as text and the gate
casts them to the contract's types. One file is held in memory at a time, in batches of rows.

A file that is still being written (or whose transfer stopped) must not load as a shorter file. A CSV whose last
line has no line ending, with a quoted value never closed or text after a closing quote (the csv module's strict
mode), or with a record of more or fewer fields than its header, and a Parquet file that cannot be read, block
the load with an error naming the file and line; nothing of it is loaded and it stays pending until a complete
copy replaces it. (A cut that falls exactly at the end of a line leaves a well-formed, shorter file, which no
reader can tell from a complete one; drop manifests, which would, are not supported yet.)
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import polars as pl

from ndc.config.sources import TableConfig
from ndc.errors import NdcError
from ndc.extract.connectors.base import Chunk, ColumnSet, ExtractRequest, FileRef
from ndc.extract.drift import family_of

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
# A value may be long (a note, a JSON document): polars reads it, so must the check. The limit is process-wide; it
# only loosens a guard, and the whole file is in memory already.
csv.field_size_limit(2**31 - 1)

def _readable(path: Path, read, *args, **kwargs):
    """``read(*args, **kwargs)``; a file that cannot be parsed (a CSV cut inside a quoted field, a damaged Parquet
    file) blocks the load with an error naming the file. Nothing of it is loaded; it stays pending for a fixed copy."""
    try:
        return read(*args, **kwargs)
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise NdcError(f"{path}: cannot be read as {path.suffix.lstrip('.').upper() or 'CSV'}: truncated or "
                       f"malformed ({detail}); file blocked, nothing of it loaded — replace it with a complete copy"
                       ) from None


def _size(path: Path, text: str) -> str:
    return f"{path.stat().st_size:,} bytes" if path.exists() else f"{len(text):,} characters"


def check_complete_csv(path: Path, text: str) -> None:
    """Raise an error naming ``path`` and the line if the CSV looks cut short or is malformed: its last line has no
    line ending, a quoted value is never closed or is followed by text (strict mode), or a record has another
    number of fields than the header (polars would read a short record's missing fields as nulls, loading a cut
    row)."""
    if text and not text.endswith(("\n", "\r")):
        raise NdcError(f"{path}: line {text.count(chr(10)) + 1} (the last) has no line ending — the file looks "
                       f"half-written ({_size(path, text)}); file "
                       "blocked, nothing of it loaded — replace it with a complete copy")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        width = len(next(reader, []))
        for record in reader:
            if record and len(record) != width:
                raise NdcError(f"{path}: line {reader.line_num} has {len(record)} field"
                               f"{'' if len(record) == 1 else 's'}, the header has {width} — the file is cut short"
                               " or malformed; file blocked, nothing of it loaded — replace it with a complete copy")
    except csv.Error as exc:
        raise NdcError(f"{path}: line {reader.line_num}: {exc} — the file is cut short or malformed; file blocked,"
                       " nothing of it loaded — replace it with a complete copy") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _family(dtype: pl.DataType) -> str:
    """A Parquet column's type family; a type with none is reported by name (drift names it)."""
    try:
        return family_of(dtype)
    except NdcError:
        return str(dtype)


class FileDropConnector:
    def __init__(self, url: str, legacy_encoding: str | None = None) -> None:
        self.root = Path(unquote(urlsplit(url).path))
        self.legacy_encoding = legacy_encoding
        self._pending: dict[tuple[str, bool, frozenset], list[tuple[Path, str]]] = {}

    def files(self, table: TableConfig) -> list[Path]:
        if not self.root.is_dir():
            raise NdcError(f"drop folder {self.root} does not exist (connection of the files source)")
        pattern = table.file_glob or f"{table.source_table}/**/*"
        return sorted(p for p in self.root.glob(pattern) if p.is_file() and p.suffix.lower() in SUFFIXES)

    def pending(self, table: TableConfig, request: ExtractRequest) -> list[tuple[Path, str]]:
        """Files not loaded yet (all of them on a full refresh), with their content hashes."""
        key = (table.name, request.full_refresh, frozenset(request.skip_files))
        if key not in self._pending:
            hashed = [(path, sha256_of(path)) for path in self.files(table)]
            seen: set[str] = set()
            todo = []
            for path, digest in hashed:
                if digest in seen or (digest in request.skip_files and not request.full_refresh):
                    continue
                seen.add(digest)
                todo.append((path, digest))
            self._pending[key] = todo
        return self._pending[key]

    def decode(self, path: Path) -> tuple[str, str]:
        data = path.read_bytes()
        try:
            return data.decode("utf-8-sig"), "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
        except UnicodeDecodeError as exc:
            if not self.legacy_encoding:
                raise NdcError(f"{path}: not valid UTF-8 at byte {exc.start} and the source declares no "
                               "legacy_encoding") from None
            try:
                return data.decode(self.legacy_encoding), self.legacy_encoding
            except UnicodeDecodeError as legacy:
                raise NdcError(f"{path}: neither UTF-8 nor {self.legacy_encoding} (byte {legacy.start})") from None

    def column_sets(self, table: TableConfig, request: ExtractRequest | None = None) -> list[ColumnSet]:
        if request is None:
            raise NdcError("a files source describes its pending files: pass the extract request")
        found = []
        for path, _ in self.pending(table, request):
            if path.suffix.lower() == ".parquet":
                schema = _readable(path, pl.read_parquet_schema, path)
                columns: dict[str, str | None] = {name: _family(dtype) for name, dtype in schema.items()}
            else:
                header = next(csv.reader(io.StringIO(self.decode(path)[0])), [])
                columns = dict.fromkeys((h.strip() for h in header), None)
            found.append(ColumnSet(f"file {path}", columns))
        return found

    def chunks(self, request: ExtractRequest) -> Iterator[Chunk]:
        for path, digest in self.pending(request.table, request):
            if path.suffix.lower() == ".parquet":
                frame, encoding = _readable(path, pl.read_parquet, path, columns=request.columns), "parquet"
            else:
                text, encoding = self.decode(path)
                check_complete_csv(path, text)
                frame = _readable(path, pl.read_csv, io.StringIO(text), infer_schema=False)
                frame = frame.rename({c: c.strip() for c in frame.columns}).select(request.columns)
            ref = FileRef(path=str(path), sha256=digest, size=path.stat().st_size, encoding=encoding)
            log.info("%s: %d rows (%s)", path, frame.height, encoding)
            slices = list(range(0, max(frame.height, 1), request.batch_rows))
            for n, offset in enumerate(slices, start=1):
                yield Chunk(frame.slice(offset, request.batch_rows), completes=[ref] if n == len(slices) else [],
                            origin=str(path))

    def keys(self, table: TableConfig, batch_rows: int) -> Iterator[pl.DataFrame]:
        raise NotImplementedError("file drops list no current keys: deletes arrive as tombstones")

    def close(self) -> None:
        self._pending.clear()
