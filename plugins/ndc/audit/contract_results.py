"""Contract-result history: every validation at a gate, pass or fail, one row in ``ndc_meta.contract_results``.

The view ``ndc_meta.contract_pass_rates`` gives pass rates per dataset, gate and day. Outcomes: ``pass`` (no row
failed), ``fail`` (rows failed and were quarantined; the rest went on), ``blocked`` (a whole-batch or whole-table
rule failed: nothing of the hand-off was loaded or published).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

GATES = ("landing", "publish", "exchange", "replay")


@dataclass
class ContractResult:
    gate: str
    dataset: str
    contract_name: str
    contract_version: str
    run_id: str | None
    rows_checked: int = 0
    rows_failed: int = 0
    failed_by_check: Counter = field(default_factory=Counter)
    duration_ms: int = 0
    blocked: str | None = None  # the message, when a whole-batch / whole-table rule stopped the hand-off
    started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def outcome(self) -> str:
        if self.blocked:
            return "blocked"
        return "fail" if self.rows_failed else "pass"

    def count(self, checked: int, failed_checks: list[list[str]] | None = None) -> None:
        """Add one batch: rows checked and, per failed row, the checks it failed."""
        self.rows_checked += checked
        for checks in failed_checks or ():
            self.rows_failed += 1
            self.failed_by_check.update(checks)


def record(conn: psycopg.Connection, result: ContractResult) -> None:
    """Store one validation (its own transaction)."""
    if result.gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {result.gate!r}")
    duration = result.duration_ms or int((time.monotonic() - result.started) * 1000)
    with conn.transaction():
        conn.execute(
            "insert into ndc_meta.contract_results (gate, dataset, contract_name, contract_version, run_id,"
            " rows_checked, rows_failed, failed_by_check, duration_ms, outcome, message)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (result.gate, result.dataset, result.contract_name, result.contract_version, result.run_id,
             result.rows_checked, result.rows_failed, Jsonb(dict(result.failed_by_check)), duration,
             result.outcome, result.blocked))
