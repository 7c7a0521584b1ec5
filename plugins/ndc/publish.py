"""Write-audit-publish for shared models.

Shared models are built into the inactive one of ``shared_a`` / ``shared_b``; consumers only ever read the views
``shared.<model>``. Publishing switches every view to the new build in **one transaction** (``CREATE OR REPLACE
VIEW`` is transactional), so readers see the previous build or the new one, never a mix; a failed build is never
published. Gate 2 (pandera on the build, issue 6) runs in :func:`audit` before the switch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ndc import ledger
from ndc.dbt import BUILD_SCHEMAS
from ndc.errors import NdcError
from ndc.identifiers import column_list, ident

log = logging.getLogger(__name__)

def active_schema(conn: psycopg.Connection) -> str | None:
    """The build schema consumers read now (None before the first publish). Needs ``ensure_meta`` first."""
    with conn.transaction():
        row = conn.execute("select build_schema from ndc_meta.publications"
                           " order by publication_id desc limit 1").fetchone()
    return row[0] if row else None


def inactive_schema(conn: psycopg.Connection) -> str:
    """Where the next build goes: the build schema consumers are not reading."""
    return "shared_b" if active_schema(conn) == "shared_a" else "shared_a"


def audit(conn: psycopg.Connection, build_schema: str, models: dict[str, list[str]]) -> None:
    """Checks a build must pass before it is published. Gate 2's contracts (issue 6) plug in here."""
    for model, columns in models.items():
        found = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
            " order by ordinal_position", (build_schema, model))]
        missing = [c for c in columns if c not in found]
        if missing:
            raise NdcError(f"{build_schema}.{model}: not built or missing contract columns {missing}; not published")


@dataclass
class Publication:
    build_schema: str
    models: list[str]
    rows: dict[str, int]


def publish(conn: psycopg.Connection, build_schema: str, models: dict[str, list[str]],
            run_id: str | None = None) -> Publication:
    """Switch every ``shared.<model>`` view to ``build_schema`` at once and record it in the ledger."""
    if build_schema not in BUILD_SCHEMAS:
        raise NdcError(f"build schema must be one of {BUILD_SCHEMAS}, got {build_schema!r}")
    started = time.monotonic()
    audit(conn, build_schema, models)
    rows = {}
    with conn.transaction():
        conn.execute("lock table ndc_meta.publications in exclusive mode")
        for model, columns in models.items():
            conn.execute(sql.SQL("create or replace view {view} as select {cols} from {table}").format(
                view=ident("shared", model), cols=column_list(columns), table=ident(build_schema, model)))
            rows[model] = conn.execute(sql.SQL("select count(*) from {}").format(ident(build_schema, model))
                                       ).fetchone()[0]
        conn.execute("insert into ndc_meta.publications (build_schema, models, run_id) values (%s, %s, %s)",
                     (build_schema, sorted(models), run_id))
    total = sum(rows.values())
    ledger.append(conn, ledger.LedgerEntry(
        kind="publish", source=build_schema, target="shared", run_id=run_id, rows_in=total, rows_loaded=total,
        rows_quarantined=0, duration_ms=int((time.monotonic() - started) * 1000), outcome="success",
        details={"models": rows}))
    log.info("published %s from %s (%s)", ", ".join(sorted(models)), build_schema, rows)
    return Publication(build_schema, sorted(models), rows)
