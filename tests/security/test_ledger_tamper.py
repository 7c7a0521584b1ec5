"""Item 5: the ledger's writer cannot rewrite it; rows the anchor never saw do not verify for long; anchoring checks
the chain first; a row's recorded time is checked against the anchor's."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ndc.audit import ledger
from ndc.errors import NdcError
from ndc.warehouse import database
from ndc.warehouse.connections import with_database
from tests.helpers.database import scalar


def _entry(n: int) -> ledger.LedgerEntry:
    return ledger.LedgerEntry(kind="probe", source="security", target=f"probe_{n}", rows_in=n, rows_loaded=n,
                              rows_quarantined=0, duration_ms=1, outcome="success")


@pytest.fixture
def runtime(published):
    with database.connect(published.runtime) as conn:
        yield conn


def test_the_writer_cannot_change_or_disable_the_ledger(published, runtime):
    ledger.append(runtime, _entry(1))
    for statement in ("update ledger set rows_in = 0", "delete from ledger", "truncate ledger",
                      "alter table ledger disable trigger user", "alter table ledger owner to current_user",
                      "drop trigger ledger_extends_chain on ledger", "update ledger_identity set ledger_uuid = "
                      "gen_random_uuid()"):
        with psycopg.connect(published.runtime, autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("set search_path = ndc_meta, public")
            conn.execute(statement)


def _forge(conn: psycopg.Connection, entry: ledger.LedgerEntry, *, when: datetime, prev: str | None = None,
           ledger_id: int | None = None) -> None:
    """A row the writer computes itself and INSERTs (it may INSERT): a chain link of its choosing."""
    last_id, last_hash = conn.execute("select ledger_id, row_hash from ndc_meta.ledger order by ledger_id desc"
                                      " limit 1").fetchone()
    values = {**entry.__dict__, "ledger_id": ledger_id or last_id + 1, "recorded_at": when}
    prev = prev or last_hash
    columns = [*ledger._FIELDS, "prev_hash", "row_hash"]
    params = [Jsonb(values[k]) if k == "details" else values[k] for k in ledger._FIELDS]
    conn.execute(f"insert into ndc_meta.ledger ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))})",
                 [*params, prev, ledger.row_hash(prev, values)])
    conn.commit()


def test_a_row_that_does_not_extend_the_chain_is_refused(published, runtime):
    ledger.append(runtime, _entry(2))
    with pytest.raises(psycopg.errors.RaiseException, match="does not extend the chain"):
        _forge(runtime, _entry(3), when=datetime.now(UTC), prev="f" * 64)
    runtime.rollback()
    with pytest.raises(psycopg.errors.RaiseException, match="does not extend the chain"):
        last = scalar(published.admin, "select max(ledger_id) from ndc_meta.ledger")
        _forge(runtime, _entry(3), when=datetime.now(UTC), ledger_id=last + 5)
    runtime.rollback()


def test_rows_the_anchor_never_saw_fail_verification_after_the_grace(published, monkeypatch):
    monkeypatch.setenv("NDC_LEDGER_ANCHOR_GRACE_SECONDS", "2")
    away = with_database(published.anchor.replace("127.0.0.1:5432", "127.0.0.1:1"), "nowhere")
    with database.connect(published.runtime) as conn:
        monkeypatch.setenv("NDC_LEDGER_ANCHOR_URL", away)  # the anchor is unreachable
        waiting, _ = ledger.append(conn, _entry(4))
        monkeypatch.setenv("NDC_LEDGER_ANCHOR_URL", published.anchor)
        soon = ledger.verify(conn)
        assert soon.ok and any("not anchored yet" in w for w in soon.warnings), soon
        time.sleep(2.5)
        late = ledger.verify(conn)
        assert not late.ok and any(f"from ledger_id {waiting}" in p and "not anchored for more than" in p
                                   for p in late.problems), late.problems
        cli = subprocess.run(["ndc", "ledger", "verify"], capture_output=True, text=True)
        assert cli.returncode == 1 and "not anchored for more than" in cli.stderr
        with pytest.raises(NdcError, match="longer than they may"):
            ledger.anchor_missing(conn)
        assert ledger.anchor_missing(conn, late=True) >= 1
        sealed = ledger.verify(conn)
        assert sealed.ok and any("anchored more than" in w for w in sealed.warnings), sealed
        assert scalar(published.admin, "select kind from ndc_meta.ledger order by ledger_id desc limit 1"
                      ) == "ledger_anchored_late"


def test_anchoring_verifies_the_chain_first(published, monkeypatch):
    """An unanchored row changed by someone who can (the ledger's owner) is not sealed as it now is."""
    away = with_database(published.anchor.replace("127.0.0.1:5432", "127.0.0.1:1"), "nowhere")
    with database.connect(published.runtime) as conn:
        monkeypatch.setenv("NDC_LEDGER_ANCHOR_URL", away)
        changed, _ = ledger.append(conn, _entry(5))
        monkeypatch.setenv("NDC_LEDGER_ANCHOR_URL", published.anchor)
        with psycopg.connect(published.admin, autocommit=True) as owner:
            owner.execute("alter table ndc_meta.ledger disable trigger ledger_no_update")
            owner.execute("update ndc_meta.ledger set rows_in = 999 where ledger_id = %s", (changed,))
            owner.execute("alter table ndc_meta.ledger enable trigger ledger_no_update")
        try:
            with pytest.raises(NdcError, match=rf"does not verify(.|\n)*ledger_id {changed}: contents do not match"):
                ledger.anchor_missing(conn)
            assert scalar(with_database(published.admin, f"{published.admin.rsplit('/', 1)[1]}_ledger_anchor"),
                          "select count(*) from ledger_anchor.anchors where ledger_id = %s", (changed,)) == 0
        finally:
            with psycopg.connect(published.admin, autocommit=True) as owner:
                owner.execute("alter table ndc_meta.ledger disable trigger ledger_no_update")
                owner.execute("update ndc_meta.ledger set rows_in = 5 where ledger_id = %s", (changed,))
                owner.execute("alter table ndc_meta.ledger enable trigger ledger_no_update")
        ledger.anchor_missing(conn)


def test_a_backdated_row_is_named(published, monkeypatch):
    """The writer appends a row claiming last month, chained correctly, while the anchor is away, then anchors it."""
    with database.connect(published.runtime) as conn:
        forged = scalar(published.admin, "select max(ledger_id) from ndc_meta.ledger") + 1
        _forge(conn, ledger.LedgerEntry(kind="delivery", source="shared", target="agency_x", rows_in=1,
                                        rows_loaded=1, rows_quarantined=0, duration_ms=1, outcome="success",
                                        details=json.loads('{"agreement": "backdated"}')),
               when=datetime.now(UTC) - timedelta(days=30))
        try:
            result = ledger.verify(conn)
            assert any(f"ledger_id {forged}: recorded_at" in p and "backdated" in p for p in result.problems), result
        finally:  # the administrator removes it (the writer cannot), so the session's ledger verifies again
            with psycopg.connect(published.admin, autocommit=True) as owner:
                owner.execute("alter table ndc_meta.ledger disable trigger ledger_no_update")
                owner.execute("delete from ndc_meta.ledger where ledger_id = %s", (forged,))
                owner.execute("alter table ndc_meta.ledger enable trigger ledger_no_update")
