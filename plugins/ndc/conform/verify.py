"""Is the published version what a full refresh of the same landing data gives? The check every delta is held to.

:func:`verify` builds the whole dbt project from scratch into side schemas (``<prefix>staging``,
``<prefix>intermediate``, ``<prefix>shared``, …: dbt var ``ndc_schema_prefix``; the published tables and the
incremental state are not touched), then compares each published ``shared.<model>`` with its full build, over the
contract's columns, both ways (``EXCEPT`` each way, and the row counts). The side schemas are dropped afterwards.
Landing must not change meanwhile (tests and the operator hold the extracts).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ndc.conform import dbt
from ndc.conform.publish import active_schema
from ndc.errors import NdcError
from ndc.identifiers import column_list, ident

PREFIX = "ndc_check_"
SAMPLE = 5


@dataclass
class Comparison:
    model: str
    published_rows: int
    full_rows: int
    only_published: int
    only_full: int
    sample_only_published: list[tuple]
    sample_only_full: list[tuple]

    @property
    def equal(self) -> bool:
        return self.published_rows == self.full_rows and not self.only_published and not self.only_full


def _schemas(conn: psycopg.Connection, prefix: str) -> list[str]:
    return [r[0] for r in conn.execute("select nspname from pg_namespace where starts_with(nspname, %s)",
                                       (prefix,))]


def drop_side_schemas(conn: psycopg.Connection, prefix: str = PREFIX) -> None:
    for schema in _schemas(conn, prefix):
        conn.execute(sql.SQL("drop schema {} cascade").format(ident(schema)))
    conn.commit()


def verify(conn: psycopg.Connection, *, prefix: str = PREFIX, keep: bool = False) -> dict[str, Comparison]:
    """Full build into side schemas, then every published shared relation compared with it."""
    active = active_schema(conn)
    if active is None:
        raise NdcError("nothing is published yet: there is no version to verify")
    drop_side_schemas(conn, prefix)
    result = dbt.run(["build", "--full-refresh", "--exclude", "resource_type:test", "resource_type:unit_test"],
                     dbt_vars={"ndc_build_schema": active, "ndc_schema_prefix": prefix})
    if result.returncode != 0:
        raise NdcError(f"the full build to compare with failed (exit {result.returncode}):\n{result.output[-3000:]}")
    try:
        return {model: compare(conn, ident("shared", model), ident(f"{prefix}shared", model), model, columns)
                for model, columns in sorted(dbt.shared_models().items())}
    finally:
        if not keep:
            drop_side_schemas(conn, prefix)


def compare(conn: psycopg.Connection, published: sql.Composable, full: sql.Composable, model: str,
            columns: list[str]) -> Comparison:
    cols = column_list(columns)
    count = sql.SQL("select count(*) from {}")
    one_way = sql.SQL("select {cols} from {a} except all select {cols} from {b}")
    with conn.transaction():
        rows = [conn.execute(count.format(r)).fetchone()[0] for r in (published, full)]
        extra = conn.execute(sql.SQL("select count(*) from ({}) d").format(
            one_way.format(cols=cols, a=published, b=full))).fetchone()[0]
        missing = conn.execute(sql.SQL("select count(*) from ({}) d").format(
            one_way.format(cols=cols, a=full, b=published))).fetchone()[0]
        sample_extra = conn.execute(one_way.format(cols=cols, a=published, b=full)
                                    + sql.SQL(" limit {}").format(sql.Literal(SAMPLE))).fetchall()
        sample_missing = conn.execute(one_way.format(cols=cols, a=full, b=published)
                                      + sql.SQL(" limit {}").format(sql.Literal(SAMPLE))).fetchall()
    return Comparison(model, rows[0], rows[1], extra, missing, sample_extra, sample_missing)
