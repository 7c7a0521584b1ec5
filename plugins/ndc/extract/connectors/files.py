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

Input that would exhaust the hub's resources is refused the same way, before anything of the run loads
(:class:`~ndc.extract.connectors.base.InputLimitError`, naming the file, the limit, what was measured and the
setting): a file larger than ``NDC_FILE_MAX_BYTES``; a Parquet file whose footer (uncompressed size, or row count
times the in-memory width of its columns) or whose decoded values exceed ``NDC_PARQUET_MAX_DECODED_BYTES`` (a
decompression bomb: a few KB on disk, gigabytes once zstd, dictionary and run-length encodings are expanded);
and a symbolic link under the drop folder (to a file or a directory, inside or outside the folder), which is
never followed. Files are opened without following links (``O_NOFOLLOW``) and read at most to the limit, so a
file swapped or grown after it was listed is refused too. The connector never moves or deletes a file: a refused
file stays where it is, pending, until it is replaced or the limit raised.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import polars as pl

from ndc.config.sources import TableConfig
from ndc.errors import NdcError
from ndc.extract.connectors.base import Chunk, ColumnSet, ExtractRequest, FileRef, InputLimitError
from ndc.extract.drift import family_of
from ndc.settings import get_settings

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
# A value may be long (a note, a JSON document): polars reads it, so must the check. The limit is process-wide; it
# only loosens a guard, and the whole file is in memory already.
csv.field_size_limit(2**31 - 1)
# A Parquet footer (its FileMetaData) larger than this is refused unparsed (a real one is KB, a wide file's MB).
FOOTER_MAX_BYTES = 64 * 1024 * 1024
REFUSED = "file blocked and left in place, nothing of this run merged"

def _readable(path: Path, read, *args, **kwargs):
    """``read(*args, **kwargs)``; a file that cannot be parsed (a CSV cut inside a quoted field, a damaged Parquet
    file) blocks the load with an error naming the file. Nothing of it is loaded; it stays pending for a fixed copy."""
    try:
        return read(*args, **kwargs)
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        kind = path.suffix.lstrip('.').upper() or 'CSV'
        raise NdcError(f"{path}: cannot be read as {kind}: truncated or malformed ({detail}); file blocked, nothing "
                       "of it loaded — replace it with a complete copy",
                       summary=f"{path}: cannot be read as {kind} ({type(exc).__name__}); file blocked") from None


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


def _open(path: Path) -> int:
    """A file descriptor of ``path`` opened without following a symbolic link (one swapped in after the listing
    fails here) and only if it is a regular file (not a FIFO or a device, which could block or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if path.is_symlink():
            raise _symlink_error(path, path) from None
        raise NdcError(f"{path}: cannot be opened ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NdcError(f"{path}: not a regular file; {REFUSED}")
    return fd


def _too_large(path: Path, size: int, limit: int) -> InputLimitError:
    return InputLimitError(f"{path}: {size:,} bytes, more than the file size limit of {limit:,} bytes "
                           f"(NDC_FILE_MAX_BYTES); {REFUSED} — split the file or raise the setting",
                           limit="NDC_FILE_MAX_BYTES")


def _symlink_error(path: Path, link: Path) -> InputLimitError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    where = "" if link == path else f" under {link},"
    return InputLimitError(f"{path}:{where} a symbolic link to {target} in the drop folder, not followed; "
                           f"{REFUSED} — drop the file itself", limit="symlink")


def read_bounded(path: Path, limit: int) -> bytes:
    """The whole content of ``path``, refused when larger than ``limit`` bytes (measured on the open file and
    again while reading: it may have grown since it was listed)."""
    fd = _open(path)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        if size > limit:
            raise _too_large(path, size, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _too_large(path, len(data), limit)
    return data


def sha256_of(path: Path, limit: int | None = None) -> str:
    """The SHA-256 of ``path``'s content, streamed; refused past ``limit`` bytes."""
    digest, size = hashlib.sha256(), 0
    with os.fdopen(_open(path), "rb") as handle:
        while block := handle.read(1 << 20):
            size += len(block)
            if limit is not None and size > limit:
                raise _too_large(path, size, limit)
            digest.update(block)
    return digest.hexdigest()


class _Thrift:
    """Just enough of Thrift's compact protocol to read a Parquet footer (``FileMetaData``) without a Parquet
    library: structs as ``{field id: value}``, lists as lists; strings, doubles and maps skipped."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos]  # IndexError past the end: a malformed footer
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            value = self.byte()
            result |= (value & 0x7F) << shift
            if not value & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def skip(self, size: int) -> None:
        self.pos += size
        if self.pos > len(self.data):
            raise ValueError("value past the end")

    def value(self, kind: int, depth: int) -> object:
        if depth > 32:
            raise ValueError("nested too deeply")
        if kind in (1, 2):
            return kind == 1
        if kind == 3:
            return self.byte()
        if kind in (4, 5, 6):
            return self.zigzag()
        if kind in (7, 8):  # a double; binary (length first)
            self.skip(8 if kind == 7 else self.varint())
            return None
        if kind in (9, 10):
            return self.items(depth)
        if kind == 11:
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self.value(types >> 4, depth + 1)
                self.value(types & 0x0F, depth + 1)
            return None
        if kind == 12:
            return self.struct(depth + 1)
        raise ValueError(f"unknown Thrift type {kind}")

    def items(self, depth: int) -> list:
        head = self.byte()
        size, kind = head >> 4, head & 0x0F
        if size == 15:
            size = self.varint()
        if size > len(self.data) - self.pos:  # every element takes a byte at least
            raise ValueError("list longer than the footer")
        if kind in (1, 2):
            return [self.byte() == 1 for _ in range(size)]
        return [self.value(kind, depth + 1) for _ in range(size)]

    def struct(self, depth: int = 0) -> dict:
        fields: dict[int, object] = {}
        field = 0
        while head := self.byte():
            field = field + (head >> 4) if head >> 4 else self.zigzag()
            fields[field] = self.value(head & 0x0F, depth)
        return fields


def parquet_footer(path: Path, size: int, read_tail) -> tuple[int, int]:
    """(rows, uncompressed bytes) a Parquet file's footer declares; ``read_tail(n)`` gives its last ``n`` bytes.
    Uncompressed bytes: the larger of the row groups' ``total_byte_size`` and their column chunks'
    ``total_uncompressed_size`` (after compression is undone, before dictionary and run-length decoding)."""
    try:
        tail = read_tail(8)
        if size < 12 or tail[4:] != b"PAR1":
            raise ValueError("no PAR1 footer (encrypted footers are not supported)")
        length = struct.unpack("<I", tail[:4])[0]
        if length > FOOTER_MAX_BYTES:
            raise ValueError(f"a footer of {length:,} bytes, over {FOOTER_MAX_BYTES:,}")
        if length + 12 > size:
            raise ValueError("a footer longer than the file")
        meta = _Thrift(read_tail(length + 8)[:length]).struct()
        groups = meta.get(4) or []
        by_group = sum(int(group.get(2) or 0) for group in groups)
        by_column = sum(int((chunk.get(3) or {}).get(6) or 0) for group in groups for chunk in group.get(1) or [])
        return int(meta.get(3) or 0), max(by_group, by_column)
    except (ValueError, IndexError, AttributeError, TypeError, struct.error) as exc:
        raise NdcError(f"{path}: cannot be read as PARQUET: truncated or malformed (footer: {exc}); file blocked, "
                       "nothing of it loaded — replace it with a complete copy") from None


def _width(dtype: pl.DataType) -> int:
    """Bytes one value of ``dtype`` takes in a polars frame at least (a text value: its 16-byte view)."""
    if dtype == pl.Boolean:
        return 1
    if dtype in (pl.Int8, pl.UInt8):
        return 1
    if dtype in (pl.Int16, pl.UInt16):
        return 2
    if dtype in (pl.Int32, pl.UInt32, pl.Float32, pl.Date):
        return 4
    if dtype in (pl.String, pl.Binary, pl.Categorical) or dtype.is_nested():
        return 16
    return 8


def _bomb(path: Path, measured: str, limit: int) -> InputLimitError:
    return InputLimitError(f"{path}: Parquet that decodes to {measured}, more than {limit:,} bytes "
                           f"(NDC_PARQUET_MAX_DECODED_BYTES) — a decompression bomb or an unusually large file; "
                           f"{REFUSED} — split the file or raise the setting", limit="NDC_PARQUET_MAX_DECODED_BYTES")


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
        settings = get_settings()
        self.max_bytes, self.max_decoded = settings.file_max_bytes, settings.parquet_max_decoded_bytes
        self._pending: dict[tuple[str, bool, frozenset], list[tuple[Path, str]]] = {}

    def files(self, table: TableConfig) -> list[Path]:
        """The table's files under the drop folder; a symbolic link among them (or a folder of them that is one)
        blocks the extract: it is never followed, wherever it points."""
        if not self.root.is_dir():
            raise NdcError(f"drop folder {self.root} does not exist (connection of the files source)")
        pattern = table.file_glob or f"{table.source_table}/**/*"
        found = []
        for path in self.root.glob(pattern):
            link = self._link_in(path)
            if link is not None and (link != path or path.is_dir() or path.suffix.lower() in SUFFIXES):
                raise _symlink_error(path, link)
            if path.suffix.lower() in SUFFIXES and path.is_file():
                found.append(path)
        return sorted(found)

    def _link_in(self, path: Path) -> Path | None:
        """The first symbolic link on the way from the drop folder to ``path`` (``path`` itself included)."""
        here = self.root
        for part in path.relative_to(self.root).parts:
            here = here / part
            if here.is_symlink():
                return here
        return None

    def pending(self, table: TableConfig, request: ExtractRequest) -> list[tuple[Path, str]]:
        """Files not loaded yet (all of them on a full refresh), with their content hashes. A file over the size
        limit blocks the extract before it is hashed."""
        key = (table.name, request.full_refresh, frozenset(request.skip_files))
        if key not in self._pending:
            listed = self.files(table)
            for path in listed:
                if (size := path.lstat().st_size) > self.max_bytes:
                    raise _too_large(path, size, self.max_bytes)
            hashed = [(path, sha256_of(path, self.max_bytes)) for path in listed]
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
        data = read_bounded(path, self.max_bytes)
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

    def check_parquet(self, path: Path, columns: list[str]) -> dict[str, pl.DataType]:
        """The Parquet file's schema, after its footer is checked against the decoded-size limit: the
        uncompressed bytes it declares, and its row count times the in-memory width of the columns read (the
        least the frame takes, whatever the encodings) — neither needs the file decompressed."""
        with os.fdopen(_open(path), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size

            def tail(n: int) -> bytes:
                handle.seek(size - n)
                return handle.read(n)

            rows, uncompressed = parquet_footer(path, size, tail)
        schema = dict(_readable(path, pl.read_parquet_schema, path))
        least = rows * sum(_width(dtype) for name, dtype in schema.items() if name in columns)
        if uncompressed > self.max_decoded:
            raise _bomb(path, f"{uncompressed:,} uncompressed bytes (its footer; {size:,} bytes on disk)",
                        self.max_decoded)
        if least > self.max_decoded:
            raise _bomb(path, f"at least {least:,} bytes in memory (its footer: {rows:,} rows of the contract's "
                              f"columns; {size:,} bytes on disk)", self.max_decoded)
        return schema

    def column_sets(self, table: TableConfig, request: ExtractRequest | None = None) -> list[ColumnSet]:
        if request is None:
            raise NdcError("a files source describes its pending files: pass the extract request")
        found = []
        for path, _ in self.pending(table, request):
            if path.suffix.lower() == ".parquet":
                schema = self.check_parquet(path, request.columns)
                columns: dict[str, str | None] = {name: _family(dtype) for name, dtype in schema.items()}
            else:
                header = next(csv.reader(io.StringIO(self.decode(path)[0])), [])
                columns = dict.fromkeys((h.strip() for h in header), None)
            found.append(ColumnSet(f"file {path}", columns))
        return found

    def read_parquet(self, path: Path, columns: list[str]) -> pl.DataFrame:
        """The file's contract columns, refused when their values decode to more than the limit (dictionary and
        run-length encodings expanded; polars holds a dictionary's text once, so measuring costs no expansion)."""
        self.check_parquet(path, columns)
        data = read_bounded(path, self.max_bytes)
        frame = _readable(path, pl.read_parquet, io.BytesIO(data), columns=columns)
        if (decoded := frame.estimated_size()) > self.max_decoded:
            raise _bomb(path, f"{decoded:,} bytes of values ({frame.height:,} rows; {len(data):,} bytes on disk)",
                        self.max_decoded)
        return frame

    def chunks(self, request: ExtractRequest) -> Iterator[Chunk]:
        for path, digest in self.pending(request.table, request):
            if path.suffix.lower() == ".parquet":
                frame, encoding = self.read_parquet(path, request.columns), "parquet"
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
