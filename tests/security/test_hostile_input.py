"""Issue 21 item 10, input that exhausts resources: each attack runs against the real connectors (a drop folder, a
local HTTP server) and a real warehouse, with small limits set through their settings. Each must end in an
InputLimitError naming the file or URL, the limit and its setting, with nothing loaded: latest state and history
unchanged, none of the attack's keys anywhere, nothing left in the stage for a later run to merge, and a refused
file left where it was. A control then shows the same content loads when the limit allows it (or the source
behaves), so "nothing loaded" is never vacuous."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest

from ndc.extract.connectors.base import InputLimitError
from ndc.tasks import extract_table
from tests.helpers.database import scalar

WINDOW = (datetime(2024, 7, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
EXPORTED = datetime(2025, 6, 1, tzinfo=UTC)
STUDENT_COLUMNS = "student_id,pin,full_name,birth_date,sex,province_code,exported_at"


def _counts(url: str, schema: str, table: str, key: str, prefix: str) -> dict[str, int]:
    """Rows of latest state, history and the stage, and the rows of the attack's keys in latest and history
    (0 where the tables do not exist yet)."""
    if scalar(url, "select to_regclass(%s) is null", (f"{schema}.{table}",)):
        return {"latest": 0, "history": 0, "stage": 0, "attack_keys": 0}
    return {
        "latest": scalar(url, f"select count(*) from {schema}.{table}"),
        "history": scalar(url, f"select count(*) from {schema}.{table}_history"),
        "stage": scalar(url, f"select count(*) from {schema}._{table}_stage"),
        "attack_keys": scalar(url, f"select (select count(*) from {schema}.{table} where {key} like %s)"
                                   f" + (select count(*) from {schema}.{table}_history where {key} like %s)",
                              (f"{prefix}%", f"{prefix}%")),
    }


def _discarded(url: str, run_id: str) -> int:
    """Batches the blocked run had staged (each marked merged as blocked, its rows gone from the stage)."""
    rows = scalar(url, "select count(*) from ndc_meta.batches where run_id = %s", (run_id,))
    assert rows == scalar(url, "select count(*) from ndc_meta.batches where run_id = %s and merge_run_id = %s",
                          (run_id, f"{run_id}:blocked"))
    return rows


# --- file drops ------------------------------------------------------------------------------------------------------

def _students(prefix: str, n: int, full_name: str | list[str] = "Nguyễn Văn An") -> pl.DataFrame:
    """``n`` valid students keyed HS<prefix><serial> (10 digits after HS)."""
    names = full_name if isinstance(full_name, list) else [full_name] * n
    return pl.DataFrame({
        "student_id": [f"HS{prefix}{i:0{10 - len(prefix)}d}" for i in range(n)],
        "pin": pl.Series([None] * n, dtype=pl.String), "full_name": names,
        "birth_date": [date(2012, 3, 4)] * n, "sex": ["M", "F"] * (n // 2) + ["M"] * (n % 2),
        "province_code": ["01"] * n, "exported_at": [EXPORTED] * n})


def _csv(frame: pl.DataFrame) -> str:
    return frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def drop(dbs, tmp_path, monkeypatch):
    root = tmp_path / "drop"
    (root / "students").mkdir(parents=True)
    monkeypatch.setenv("AIRFLOW_CONN_NDC_SRC_EDUCATION", root.as_uri())
    return root


def _students_state(dbs, prefix: str) -> dict[str, int]:
    return _counts(dbs.warehouse, "landing_education", "students", "student_id", f"HS{prefix}")


def _file_recorded(dbs, path: Path) -> int:
    return scalar(dbs.warehouse, "select count(*) from ndc_meta.files where path = %s", (str(path),))


def test_a_file_over_the_size_limit_blocks_the_run_and_stays(dbs, drop, monkeypatch):
    small, large = drop / "students" / "2025" / "01.csv", drop / "students" / "2025" / "02.csv"
    small.parent.mkdir()
    small.write_text(_csv(_students("11", 2)), encoding="utf-8")
    large.write_text(_csv(_students("12", 300)), encoding="utf-8")
    content = large.read_bytes()
    monkeypatch.setenv("NDC_FILE_MAX_BYTES", "4096")
    before = {p: _students_state(dbs, p) for p in ("11", "12")}
    with pytest.raises(InputLimitError) as caught:
        extract_table("education", "students", *WINDOW, run_id="file-too-large")
    message = str(caught.value)
    assert message.startswith(f"{large}: {len(content):,} bytes, more than the file size limit of 4,096 bytes "
                              "(NDC_FILE_MAX_BYTES)"), message
    assert caught.value.check == "input_limit(NDC_FILE_MAX_BYTES)"
    assert {p: _students_state(dbs, p) for p in ("11", "12")} == before, "nothing of the run loaded"
    assert not _file_recorded(dbs, small) and not _file_recorded(dbs, large)
    assert large.read_bytes() == content, "the refused file stays where it was"

    monkeypatch.delenv("NDC_FILE_MAX_BYTES")  # the default (1 GiB): the same files load
    result = extract_table("education", "students", *WINDOW, run_id="file-size-default")
    assert sorted(result.files) == [str(small), str(large)] and result.rows_loaded == 302


@pytest.mark.parametrize("link", ["file", "folder", "table_folder"])
def test_a_symbolic_link_is_refused_not_followed(dbs, drop, tmp_path, link):
    """A link to valid rows outside the drop folder (the file itself, a school-year folder, the table's folder)."""
    prefix = {"file": "21", "folder": "22", "table_folder": "23"}[link]
    outside = tmp_path / f"outside_{link}"
    outside.mkdir()
    (outside / "01.csv").write_text(_csv(_students(prefix, 5)), encoding="utf-8")
    if link == "file":
        linked = drop / "students" / "2025" / "01.csv"
        linked.parent.mkdir()
        linked.symlink_to(outside / "01.csv")
    elif link == "folder":
        linked = drop / "students" / "2025"
        linked.symlink_to(outside, target_is_directory=True)
    else:
        linked = drop / "students"
        linked.rmdir()
        linked.symlink_to(outside, target_is_directory=True)
    before = _students_state(dbs, prefix)
    with pytest.raises(InputLimitError) as caught:
        extract_table("education", "students", *WINDOW, run_id=f"symlink-{link}")
    message = str(caught.value)
    assert str(linked) in message and f"a symbolic link to {outside}" in message and "not followed" in message
    assert caught.value.check == "input_limit(symlink)"
    assert _students_state(dbs, prefix) == before and before["attack_keys"] == 0, "nothing of the run loaded"
    assert (outside / "01.csv").exists()

    linked.unlink()  # the file itself, dropped: it loads
    real = drop / "students" / "2025" / "01.csv"
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_bytes((outside / "01.csv").read_bytes())
    assert extract_table("education", "students", *WINDOW, run_id=f"symlink-{link}-real").rows_loaded == 5


def _parquet_bomb(kind: str, prefix: str) -> pl.DataFrame:
    if kind == "run_length":  # 2M rows of one repeated student: 30 KB on disk, ~180 MB in memory
        return _students(prefix, 1).select(pl.all().repeat_by(2_000_000).explode())
    if kind == "dictionary":  # 20k rows of one 2,000-character name: 12 KB on disk, 40 MB of values
        return _students(prefix, 20_000, "x" * 2_000)
    return _students(prefix, 20_000, [f"{'x' * 2_000}{i}" for i in range(20_000)])  # zstd: 70 KB for 40 MB


@pytest.mark.parametrize("kind", ["run_length", "dictionary", "zstd"])
def test_a_parquet_decompression_bomb_is_refused(dbs, drop, monkeypatch, kind):
    """Small on disk, tens of MB decoded: refused from its footer (``zstd``: uncompressed size; ``run_length``:
    its row count) or, once decoded and before anything of it is staged, by its values (``dictionary``: one
    value, referenced 20,000 times). A valid file before it was staged already: its batch is discarded too."""
    prefix = {"run_length": "31", "dictionary": "32", "zstd": "33"}[kind]
    folder = drop / "students" / "2025"
    folder.mkdir()
    good, bomb = folder / "01.parquet", folder / "02.parquet"
    _students(f"{prefix}9", 1000).write_parquet(good)
    _parquet_bomb(kind, prefix).write_parquet(bomb)
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv("NDC_PARQUET_MAX_DECODED_BYTES", str(8 * 1024 * 1024))
    monkeypatch.setenv("NDC_BATCH_BYTES", "1024")  # batches of 1,000 rows: the good file is staged on its own
    run_id = f"parquet-bomb-{kind}"
    before = _students_state(dbs, prefix)
    with pytest.raises(InputLimitError) as caught:
        extract_table("education", "students", *WINDOW, run_id=run_id)
    message = str(caught.value)
    measured = {"run_length": "at least 184,000,000 bytes in memory (its footer: 2,000,000 rows",
                "dictionary": "bytes of values (20,000 rows", "zstd": "uncompressed bytes (its footer"}[kind]
    assert message.startswith(f"{bomb}: Parquet that decodes to ") and measured in message, message
    assert "more than 8,388,608 bytes (NDC_PARQUET_MAX_DECODED_BYTES)" in message
    assert _students_state(dbs, prefix) == before and before["attack_keys"] == 0, "nothing of the run loaded"
    assert not _file_recorded(dbs, good) and bomb.exists()
    # refused from the footer: before anything was read; from the values: after the good file's batch was staged
    assert _discarded(dbs.warehouse, run_id) == (1 if kind == "dictionary" else 0)

    bomb.unlink()
    assert extract_table("education", "students", *WINDOW, run_id=f"{run_id}-good").files == [str(good)]


# --- the HTTP connector ----------------------------------------------------------------------------------------------

SCHEMA = {"resource": "employers", "fields": [
    {"name": "employer_code", "type": "string"}, {"name": "name", "type": "string"},
    {"name": "province_code", "type": "string"}, {"name": "updated_at", "type": "timestamp"}]}


def _employers(prefix: str, n: int) -> list[dict]:
    return [{"employer_code": f"{prefix}{i:0{10 - len(prefix)}d}", "name": f"Công ty {prefix} số {i}",
             "province_code": "01", "updated_at": "2025-06-01T00:00:00Z"} for i in range(n)]


class _Api(http.server.BaseHTTPRequestHandler):
    """The insurance API's shape; ``self.server.page(handler, n, cursor)`` answers the n-th data request."""

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path.endswith("/schema"):
            return self.send_json(SCHEMA)
        self.server.cursors.append(parse_qs(url.query).get("cursor", [None])[0])
        return self.server.page(self, len(self.server.cursors), self.server.cursors[-1])

    def send_json(self, document: dict, **headers: str) -> None:
        body = json.dumps(document).encode()
        self.send_head(200, {"Content-Length": str(len(body)), **headers})
        self.wfile.write(body)

    def send_head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def send_endless(self, head: bytes, chunk: bytes, pause: float = 0.0, total: int = 200 * 1024 * 1024) -> None:
        """A body with no length that goes on (``total`` bytes; a valid JSON page if it ever ends)."""
        self.send_head(200, {})
        try:
            self.wfile.write(head)
            while self.server.sent < total:
                self.wfile.write(chunk)
                self.wfile.flush()
                self.server.sent += len(chunk)
                time.sleep(pause)
            self.wfile.write(b'], "next_cursor": null}')
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def api(dbs, monkeypatch):
    """Start a server answering data requests with ``page``; its URL is the insurance source's connection."""
    servers = []

    def start(page: Callable) -> http.server.ThreadingHTTPServer:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
        server.daemon_threads = True
        server.page, server.cursors, server.sent = page, [], 0
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("AIRFLOW_CONN_NDC_SRC_INSURANCE", f"http://:hostile-token@127.0.0.1:{server.server_port}/")
        return server

    monkeypatch.setenv("NDC_BATCH_BYTES", "1024")  # pages and batches of 1,000 rows: page 1 is staged on its own
    monkeypatch.setenv("NDC_HTTP_ATTEMPTS", "2")
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _employers_state(dbs, prefix: str) -> dict[str, int]:
    return _counts(dbs.warehouse, "landing_insurance", "employers", "employer_code", prefix)


def _blocked_http_run(dbs, api, prefix: str, attack: Callable, run_id: str) -> tuple[InputLimitError, object]:
    """Page 1: 1,000 valid rows and a cursor; then ``attack``. The run must be blocked with nothing loaded; then
    a behaving server's rows load and the attack run's staged rows never do."""
    def page(handler, n, cursor):
        if n == 1:
            return handler.send_json({"data": _employers(prefix, 1000), "next_cursor": "c1"})
        return attack(handler, n, cursor)

    before = _employers_state(dbs, prefix)
    server = api(page)
    with pytest.raises(InputLimitError) as caught:
        extract_table("insurance", "employers", *WINDOW, run_id=run_id)
    error = caught.value
    assert "hostile-token" not in str(error)
    assert "cursor=c" not in error.summary, "what the ledger keeps leaves the cursor out (it can encode a key)"
    assert scalar(dbs.warehouse, "select outcome from ndc_meta.ledger where run_id = %s", (run_id,)) == "failed"
    assert _employers_state(dbs, prefix) == before and before["attack_keys"] == 0, "nothing of the run loaded"

    control = f"9{prefix}"  # a later run of a behaving source loads its rows, and none of the blocked run's
    api(lambda handler, n, cursor: handler.send_json({"data": _employers(control, 3), "next_cursor": None}))
    assert extract_table("insurance", "employers", *WINDOW, run_id=f"{run_id}-control").rows_loaded == 3
    assert _employers_state(dbs, control)["attack_keys"] == 3 * 2, "latest and history hold the control's rows"
    assert _employers_state(dbs, prefix)["attack_keys"] == 0, "the blocked run's staged rows were never merged"
    return error, server


@pytest.mark.parametrize("body", ["endless", "declared", "gzip"])
def test_a_response_body_over_the_cap_is_cut_and_refused(dbs, api, monkeypatch, body):
    """An endless body (200 MB, no length), a Content-Length of 1 GB, a gzip bomb (64 KB for 64 MiB)."""
    monkeypatch.setenv("NDC_HTTP_MAX_BODY_BYTES", str(256 * 1024))
    bomb = gzip.compress(b'{"data": [' + b" " * (64 * 1024 * 1024) + b'], "next_cursor": null}', 6) \
        if body == "gzip" else b""

    def attack(handler, n, cursor):
        if body == "endless":
            handler.send_endless(b'{"data": [', b" " * 65536)
        elif body == "declared":
            handler.send_head(200, {"Content-Length": str(10**9)})
            handler.wfile.write(b'{"data": [')
        else:
            handler.send_head(200, {"Content-Length": str(len(bomb)), "Content-Encoding": "gzip"})
            handler.wfile.write(bomb)

    run_id = f"http-body-{body}"
    started = time.monotonic()
    error, server = _blocked_http_run(dbs, api, {"endless": "41", "declared": "42", "gzip": "43"}[body], attack, run_id)
    measured = {"endless": "sent more than 262,144 bytes", "declared": "declares a Content-Length of 1,000,000,000",
                "gzip": "sent more than 262,144 bytes (gzip-decoded)"}[body]
    message = str(error)
    assert message.startswith(f"GET http://127.0.0.1:{server.server_port}/v1/employers?updated_from=") and \
        "cursor=c1:" in message, message
    assert f"the response {measured}" in message and "body limit of 262,144 bytes (NDC_HTTP_MAX_BODY_BYTES)" in message
    assert error.check == "input_limit(NDC_HTTP_MAX_BODY_BYTES)"
    assert server.cursors == [None, "c1"], "refused at once, not retried"
    assert server.sent < 50 * 1024 * 1024, "the read stopped near the cap, not at the end of the body"
    assert _discarded(dbs.warehouse, run_id) == 1, "page 1 had been staged: its batch is discarded"
    assert time.monotonic() - started < 20


def test_more_pages_than_the_page_limit_are_refused(dbs, api, monkeypatch):
    monkeypatch.setenv("NDC_HTTP_MAX_PAGES", "5")
    error, server = _blocked_http_run(
        dbs, api, "51", lambda handler, n, cursor: handler.send_json({"data": [], "next_cursor": f"c{n}"}),
        "http-pages")
    message = str(error)
    assert message.startswith(f"GET http://127.0.0.1:{server.server_port}/v1/employers?") and "cursor=c4:" in message
    assert "page 5 still hands out a next_cursor" in message and "page limit of 5 pages" in message
    assert "(NDC_HTTP_MAX_PAGES)" in message and error.check == "input_limit(NDC_HTTP_MAX_PAGES)"
    assert server.cursors == [None, "c1", "c2", "c3", "c4"]
    assert _discarded(dbs.warehouse, "http-pages") == 1


def test_a_cursor_that_repeats_is_refused_at_once(dbs, api):
    """c1 -> c2 -> c3 -> c1: a loop the page limit would only stop after 100,000 pages."""
    cursors = {2: "c2", 3: "c3", 4: "c1"}
    error, server = _blocked_http_run(
        dbs, api, "61", lambda handler, n, cursor: handler.send_json(
            {"data": _employers(f"61{n}", 2), "next_cursor": cursors[n]}), "http-loop")
    message = str(error)
    assert message.startswith(f"GET http://127.0.0.1:{server.server_port}/v1/employers?") and "cursor=c3:" in message
    assert "page 4 hands out the next_cursor page 1 handed out, which this extract has already followed" in message
    assert error.check == "input_limit(repeated_cursor)" and server.cursors == [None, "c1", "c2", "c3"]
    assert _discarded(dbs.warehouse, "http-loop") == 1


@pytest.mark.parametrize("slow", ["pages", "trickled_body"])
def test_the_whole_extract_has_a_deadline(dbs, api, monkeypatch, slow):
    """Endless slow pages (each in time for any per-request timeout), or a body trickled a byte at a time
    (a read timeout never fires): the extract stops at its deadline."""
    monkeypatch.setenv("NDC_HTTP_DEADLINE_SECONDS", "2")

    def attack(handler, n, cursor):
        if slow == "pages":
            time.sleep(0.3)
            return handler.send_json({"data": [], "next_cursor": f"c{n}"})
        return handler.send_endless(b'{"data": [', b" ", pause=0.05)

    started = time.monotonic()
    error, server = _blocked_http_run(dbs, api, {"pages": "71", "trickled_body": "72"}[slow], attack,
                                      f"http-deadline-{slow}")
    message = str(error)
    assert message.startswith(f"GET http://127.0.0.1:{server.server_port}/v1/employers?"), message
    assert "past its deadline of 2 s (NDC_HTTP_DEADLINE_SECONDS)" in message
    assert error.check == "input_limit(NDC_HTTP_DEADLINE_SECONDS)"
    assert time.monotonic() - started < 15
    if slow == "trickled_body":
        assert server.cursors == [None, "c1"] and server.sent < 100
    else:
        assert 3 <= len(server.cursors) <= 10



def test_an_api_error_quoting_a_citizen_stays_out_of_the_ledger(dbs, api):
    """Item 11: an API's error body can quote what it was asked about. The error names the URL, status and body for
    the task log; the ledger keeps the URL and status only."""
    pin = "079204001234"

    def refuse(handler, n, cursor):
        body = json.dumps({"error": f"employer of citizen {pin} (Trần Thị Bình) is sealed"}).encode()
        handler.send_head(403, {"Content-Length": str(len(body))})
        handler.wfile.write(body)

    api(refuse)
    from ndc.errors import NdcError

    with pytest.raises(NdcError, match=f"HTTP 403: .*{pin}"):
        extract_table("insurance", "employers", *WINDOW, run_id="http-error-body")
    kept = scalar(dbs.warehouse, "select details::text from ndc_meta.ledger where run_id = 'http-error-body'")
    assert "HTTP 403" in kept and pin not in kept and "Bình" not in kept, kept
