"""One hand-off run, recorded the same way whoever runs it: extract, direct exchange, replay, full compare, purge,
publish and the collection of consumer reads.

A hand-off opens a :class:`Handoff` with :func:`recorded`; the body counts rows and fills ``details``; when the block
ends, however it ends, the hand-off writes its one ledger row and, where a contract gated it, its contract result;
on success it closes the dataset's open alerts. The rules every hand-off shares live here and nowhere else:

- the outcome is ``failed`` when the block raised, and an interruption (Ctrl-C, a task timeout: a
  ``BaseException``) is a failure, never a success;
- the contract result is written for a run that checked rows: a success, or a run a contract rule blocked
  (``run.blocked``); a run that failed for another reason checked nothing;
- a warehouse session that went away gets no ledger write (the error that propagates says so), and a ledger write
  that fails never hides the run's own error;
- the ledger is append-only and never purged, so its ``details`` hold check names, error classes and counts,
  never row values: the error text is the body's own description when it set one (an exchange keeps row values
  out of it), else :func:`ledger_error` — a platform error's own message (a contract violation's ``summary``), and
  of any other error (the database's, pandera's, a library's: their text can quote the data) only its class,
  SQLSTATE and the names of the constraint, table and column it concerns. The full message goes to the task log;
- a safety override the run used (``accept_row_drop``, ``accept_row_change``, ``accept_stale``,
  ``allow_mass_delete``, a purge's ``retention_days``) is in ``details["overrides"]`` (name → whether it took
  effect, and what it let through), only when one was set: :meth:`Handoff.override`.

Events that are not runs (an agreement applied or revoked, a delivery, a deprecation notice) are one ledger row
each: :func:`record_event`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg

from ndc.audit import alerts, contract_results, ledger
from ndc.errors import ContractViolation, NdcError

if TYPE_CHECKING:
    from ndc.contracts import Contract

log = logging.getLogger(__name__)


def as_utc(moment: datetime) -> datetime:
    """An interval bound as a plain UTC datetime: naive means UTC; Airflow passes pendulum datetimes."""
    if moment.tzinfo is None:
        return datetime(*moment.timetuple()[:6], moment.microsecond, tzinfo=UTC)
    return datetime.fromtimestamp(moment.timestamp(), tz=UTC)


def new_run_id(prefix: str = "manual") -> str:
    """The run id of a hand-off started by hand (Airflow passes its own)."""
    return f"{prefix}__{datetime.now(UTC).isoformat(timespec='seconds')}"


@dataclass
class Handoff:
    """What one hand-off moved, as its ledger row and contract result will say."""

    kind: str
    source: str
    target: str
    run_id: str
    interval: tuple[datetime | None, datetime | None] = (None, None)
    contract: Contract | None = None
    gate: str | None = None        # the contract result's gate ('landing', 'exchange', 'replay'); None: no result
    dataset: str | None = None     # the contract result's dataset, and whose open alerts a success closes
    closes_alerts: bool = True
    write: bool = True             # False for a dry run: nothing is recorded
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_checked: int | None = None  # the contract result's figures when they differ from rows in / quarantined
    rows_failed: int | None = None
    failed_by_check: Counter = field(default_factory=Counter)
    details: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)  # the safety overrides given: details["overrides"] when any
    error: str | None = None
    blocked: str | None = None     # the contract rule that stopped the run (its result is still recorded)
    interrupted_note: str = ""     # what an interruption left behind, for the ledger row's error
    began: float = field(default_factory=time.monotonic)
    ledger_id: int | None = None
    ledger_hash: str | None = None

    def override(self, name: str, took_effect: bool, **what) -> None:
        """Record that the run was given safety override ``name`` (``took_effect``: whether it let through
        something the rule would have stopped; ``what``: counts or names, never row values)."""
        self.overrides[name] = {"took_effect": bool(took_effect), **what}
        log.warning("%s %s: override %s given%s %s", self.kind, self.run_id, name,
                    " and it took effect:" if took_effect else "; it did not take effect", what or "")

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.began

    @property
    def outcome(self) -> str:
        return "failed" if self.error else "success"

    def entry(self) -> ledger.LedgerEntry:
        details = dict(self.details)
        if self.overrides:
            details["overrides"] = self.overrides
        if self.error:
            details["error"] = self.error
        return ledger.LedgerEntry(
            kind=self.kind, source=self.source, target=self.target, run_id=self.run_id,
            interval_start=self.interval[0], interval_end=self.interval[1], rows_in=self.rows_in,
            rows_loaded=self.rows_loaded, rows_quarantined=self.rows_quarantined,
            contract_name=self.contract.name if self.contract else None,
            contract_version=self.contract.version if self.contract else None,
            duration_ms=int(self.seconds * 1000), outcome=self.outcome, details=details)

    def contract_result(self) -> contract_results.ContractResult:
        assert self.contract is not None and self.gate is not None
        return contract_results.ContractResult(
            gate=self.gate, dataset=self.dataset or self.contract.name, contract_name=self.contract.name,
            contract_version=self.contract.version, run_id=self.run_id,
            rows_checked=self.rows_in if self.rows_checked is None else self.rows_checked,
            rows_failed=self.rows_quarantined if self.rows_failed is None else self.rows_failed,
            failed_by_check=+self.failed_by_check, duration_ms=max(1, int(self.seconds * 1000)),
            blocked=self.blocked)


# What of a database error's diagnostics may be stored: names of schema objects, never the values it quotes.
_DIAG_NAMES = ("schema_name", "table_name", "column_name", "constraint_name", "datatype_name")


def ledger_error(exc: BaseException) -> str:
    """What the ledger keeps of ``exc``: a contract violation's ``summary`` (check names and counts); a platform
    error's own message (it names what to fix: file, field, source, table, column); of any other error only its
    class, SQLSTATE and the schema objects it names — the database's and the libraries' messages quote row values
    (a key in a unique violation, a value that did not parse, pandera's failure cases)."""
    name = type(exc).__name__
    if isinstance(exc, ContractViolation):
        return f"{name}: {exc.summary}"[:2000]
    if isinstance(exc, NdcError):
        return f"{name}: {exc.summary or exc}"[:2000]
    facts = []
    if sqlstate := getattr(exc, "sqlstate", None):
        facts.append(f"SQLSTATE {sqlstate}")
    diag = getattr(exc, "diag", None)
    for attribute in _DIAG_NAMES if diag is not None else ():
        if value := getattr(diag, attribute, None):
            facts.append(f"{attribute.removesuffix('_name')} {value}")
    return f"{name}{' (' + ', '.join(facts) + ')' if facts else ''}: message not kept (it may quote row values);" \
        " see the task log"


@contextmanager
def recorded(conn: psycopg.Connection, run: Handoff) -> Iterator[Handoff]:
    """Run the block as hand-off ``run``; record it when the block ends (see the module's docstring)."""
    try:
        yield run
    except Exception as exc:
        if run.error is None:
            run.error = ledger_error(exc)
            if run.error != f"{type(exc).__name__}: {exc}":
                log.error("%s %s failed: %s: %s", run.kind, run.run_id, type(exc).__name__, exc)
        raise
    except BaseException as exc:  # interrupted: a failed run, never a success
        run.error = f"{type(exc).__name__}: the run was interrupted{run.interrupted_note}"
        raise
    finally:
        _record(conn, run)
    if run.dataset and run.write and run.closes_alerts:
        alerts.close_alerts(conn, run.dataset, run.run_id)


def _record(conn: psycopg.Connection, run: Handoff) -> None:
    if not run.write:
        return
    if conn.broken:
        log.error("%s %s: no ledger row written, the warehouse connection is gone: %s", run.kind, run.run_id,
                  run.error)
        return
    try:
        if conn.info.transaction_status.name != "IDLE":
            conn.rollback()
        run.ledger_id, run.ledger_hash = ledger.append(conn, run.entry())
        if run.gate and run.contract and (run.error is None or run.blocked):
            contract_results.record(conn, run.contract_result())
    except Exception:
        if run.error is None:
            raise
        # the run's own error is what propagates; the ledger could not take its failed row
        log.exception("%s %s: could not record the failed run in the ledger", run.kind, run.run_id)


def record_event(conn: psycopg.Connection, kind: str, source: str, target: str, run_id: str | None,
                 details: dict, rows: int = 0) -> tuple[int, str]:
    """One ledger row for an event that moves no rows of its own (an agreement applied or revoked, a delivery,
    a deprecation notice); returns its id and hash."""
    return ledger.append(conn, ledger.LedgerEntry(
        kind=kind, source=source, target=target, run_id=run_id, rows_in=rows, rows_loaded=rows, rows_quarantined=0,
        duration_ms=0, outcome="success", details=details))


# How far each kind of hand-off has moved its data (the latest interval end): a monitoring figure, not the key the
# next run extracts by. Table, key column, "through" column; fixed names, never from config.
_WATERMARKS = {
    "extract": ("watermarks", "dataset", "loaded_through"),
    "exchange": ("exchange_watermarks", "exchange", "delivered_through"),
}


def advance_watermark(conn: psycopg.Connection, kind: str, name: str, through: datetime | None,
                      run_id: str) -> None:
    """Move ``name``'s watermark forward to ``through`` (never back: a rerun of an old interval keeps it)."""
    table, key, column = _WATERMARKS[kind]
    with conn.transaction():
        conn.execute(
            f"insert into ndc_meta.{table} ({key}, {column}, last_run_id) values (%s, %s, %s)"
            f" on conflict ({key}) do update set {column} = greatest(ndc_meta.{table}.{column},"
            f" excluded.{column}), last_run_id = excluded.last_run_id, updated_at = now()",
            (name, through, run_id))
