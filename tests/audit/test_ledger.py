"""The ledger is append-only and hash-chained; verify names the row where the chain breaks."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from ndc.audit import anchor, ledger
from ndc.warehouse import database


def _entry(n: int) -> ledger.LedgerEntry:
    return ledger.LedgerEntry(kind="extract", source="population", target="landing_population.citizens",
                              rows_in=n, rows_loaded=n - 1, rows_quarantined=1, duration_ms=5, outcome="success",
                              details={"batches": 1, "note": "Bộ Công an"})


@pytest.fixture
def chain(dbs):
    """A fresh five-row ledger (an administrator's reset of the ledger and of its anchor, between tests)."""
    with database.connect(dbs.warehouse) as conn:
        database.ensure_meta(conn)
        conn.execute("alter table ndc_meta.ledger disable trigger user")
        conn.execute("delete from ndc_meta.ledger")
        conn.execute("alter table ndc_meta.ledger enable trigger user")
        conn.commit()
        url = anchor.anchor_url(dbs.warehouse)
        anchor.ensure(url)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("alter table ledger_anchor.anchors disable trigger user")
            admin.execute("delete from ledger_anchor.anchors")
            admin.execute("alter table ledger_anchor.anchors enable trigger user")
        heads = [ledger.append(conn, _entry(n)) for n in range(10, 15)]
        yield conn, heads


def test_chain_verifies_and_links(chain):
    conn, heads = chain
    result = ledger.verify(conn)
    assert result.ok and result.rows == 5 and result.head == heads[-1][1]
    links = conn.execute("select prev_hash, row_hash from ndc_meta.ledger order by ledger_id").fetchall()
    assert links[0][0] == ledger.GENESIS
    assert all(links[i][0] == links[i - 1][1] for i in range(1, 5))


@pytest.mark.parametrize("statement", ["update ndc_meta.ledger set rows_in = 0 where ledger_id = 2",
                                       "delete from ndc_meta.ledger where ledger_id = 5",
                                       "truncate ndc_meta.ledger"])
def test_changes_are_refused(chain, statement):
    conn, _ = chain
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute(statement)
    conn.rollback()


def _tamper(conn: psycopg.Connection, statement: str) -> list[str]:
    conn.execute("alter table ndc_meta.ledger disable trigger user")
    conn.execute(statement)
    conn.execute("alter table ndc_meta.ledger enable trigger user")
    conn.commit()
    return ledger.verify(conn).problems


def test_edited_row_is_named(chain):
    problems = _tamper(chain[0], "update ndc_meta.ledger set rows_loaded = 99 where ledger_id = 3")
    assert problems == ["ledger_id 3: contents do not match its hash"]


def test_deleted_middle_row_is_named(chain):
    problems = _tamper(chain[0], "delete from ndc_meta.ledger where ledger_id = 2")
    assert "ledger_id 2..2: rows missing" in problems
    assert "ledger_id 3: prev_hash does not match the row before" in problems


def test_cli_verify_exit_codes(chain, dbs):
    ok = subprocess.run(["ndc", "ledger", "verify"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "ledger verified: 5 rows" in ok.stdout
    _tamper(chain[0], "update ndc_meta.ledger set outcome = 'failed' where ledger_id = 4")
    bad = subprocess.run(["ndc", "ledger", "verify"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "ledger_id 4: contents do not match its hash" in bad.stderr


def test_every_row_is_anchored_outside_the_ledger_database(chain, dbs):
    conn, heads = chain
    url = anchor.anchor_url(dbs.warehouse)
    assert url != dbs.warehouse and url.endswith("_ledger_anchor")
    with psycopg.connect(url) as other:
        assert other.execute("select ledger_id, row_hash from ledger_anchor.anchors order by 1").fetchall() == heads
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            other.execute("update ledger_anchor.anchors set row_hash = 'x'")
    result = ledger.verify(conn)
    assert result.ok and result.anchored == 5 and result.warnings == []


def test_deleted_last_row_is_named(chain):
    problems = _tamper(chain[0], "delete from ndc_meta.ledger where ledger_id = 5")
    assert problems == ["ledger_id 5..5: deleted at the end of the ledger (anchored up to 5, the ledger ends at 4)"]


def _rewrite_from(conn: psycopg.Connection, first: int, change: str) -> None:
    """What someone who can write the ledger could do: change a row and recompute every hash after it."""
    conn.execute("alter table ndc_meta.ledger disable trigger user")
    conn.execute(f"update ndc_meta.ledger set {change} where ledger_id = {first}")
    columns = [*ledger._FIELDS, "prev_hash", "row_hash"]
    rows = conn.execute(f"select {', '.join(columns)} from ndc_meta.ledger order by ledger_id").fetchall()
    prev = ledger.GENESIS
    for row in rows:
        values = dict(zip(columns, row, strict=True))
        if values["ledger_id"] >= first:
            digest = ledger.row_hash(prev, values)
            conn.execute("update ndc_meta.ledger set prev_hash = %s, row_hash = %s where ledger_id = %s",
                         (prev, digest, values["ledger_id"]))
            values["row_hash"] = digest
        prev = values["row_hash"]
    conn.execute("alter table ndc_meta.ledger enable trigger user")
    conn.commit()


def test_a_rewritten_chain_verifies_by_itself_but_not_against_its_anchor(chain):
    conn, _ = chain
    _rewrite_from(conn, 2, "rows_quarantined = 0")
    result = ledger.verify(conn)
    assert result.problems == ["ledger_id 2: hash differs from its anchor — the chain was rewritten from here "
                               "(4 anchored row(s) differ)"]


def test_a_replaced_ledger_is_named(chain):
    conn, _ = chain
    _rewrite_from(conn, 1, "rows_in = 1")
    conn.execute("update ndc_meta.ledger_identity set ledger_uuid = gen_random_uuid()")
    conn.commit()
    problems = ledger.verify(conn).problems
    assert problems[0].startswith("the anchor holds none of this ledger's 5 rows")
    assert "the anchor holds another ledger of database" in problems[1] and "up to ledger_id 5" in problems[1]


def test_an_unreachable_anchor_is_caught_up_later(chain, dbs, monkeypatch):
    conn, _ = chain
    monkeypatch.setenv("NDC_LEDGER_ANCHOR_URL", "postgresql://postgres@127.0.0.1:9/nowhere")  # nothing listens
    ledger.append(conn, _entry(99))  # the hand-off is recorded even so
    monkeypatch.delenv("NDC_LEDGER_ANCHOR_URL")
    result = ledger.verify(conn)
    assert result.ok and result.warnings == ["1 row(s) not anchored yet (from ledger_id 6): `ndc ledger anchor` "
                                             "anchors them; verify fails once one waits longer than 1:00:00"]
    out = subprocess.run(["ndc", "ledger", "anchor"], capture_output=True, text=True, check=True)
    assert "anchored 1 ledger row(s)" in out.stdout
    assert ledger.verify(conn).warnings == []
