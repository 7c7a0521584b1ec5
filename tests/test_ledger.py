"""The ledger is append-only and hash-chained; verify names the row where the chain breaks."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from ndc import ledger, warehouse


def _entry(n: int) -> ledger.LedgerEntry:
    return ledger.LedgerEntry(kind="extract", source="population", target="landing_population.citizens",
                              rows_in=n, rows_loaded=n - 1, rows_quarantined=1, duration_ms=5, outcome="success",
                              details={"batches": 1, "note": "Bộ Công an"})


@pytest.fixture
def chain(dbs):
    with warehouse.connect(dbs.warehouse) as conn:
        warehouse.ensure_meta(conn)
        conn.execute("alter table ndc_meta.ledger disable trigger user")
        conn.execute("delete from ndc_meta.ledger")
        conn.execute("alter table ndc_meta.ledger enable trigger user")
        conn.commit()
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
