"""``ndc ledger``: verify the hash chain against its anchor, and anchor rows written while it was away."""

from __future__ import annotations

import sys

import click

from ndc.cli.targets import warehouse_url


@click.group()
def ledger() -> None:
    """The hash-chained ledger of hand-offs."""


@ledger.command("verify")
def ledger_verify() -> None:
    """Recompute the chain and compare it with its anchor; exit 1 on an edited or deleted row, a deleted tail, a
    rewritten chain or a replaced ledger (each named)."""
    from ndc.audit import ledger as ledger_module
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        database.ensure_meta(conn)
        result = ledger_module.verify(conn)
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if result.ok:
        click.echo(f"ledger verified: {result.rows} rows, head {result.head}, {result.anchored} anchored outside "
                   "the ledger's database")
        return
    for problem in result.problems:
        click.secho(problem, fg="red", err=True)
    click.secho(f"ledger does NOT verify: {len(result.problems)} problem(s) in {result.rows} rows", fg="red", err=True)
    sys.exit(1)


@ledger.command("anchor")
@click.option("--late", is_flag=True, help="also seal rows that waited longer than NDC_LEDGER_ANCHOR_GRACE_SECONDS "
              "(recorded in the ledger)")
def ledger_anchor(late: bool) -> None:
    """Verify the chain, then anchor every ledger row not anchored yet (after the anchor database was
    unreachable)."""
    from ndc.audit import ledger as ledger_module
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        database.ensure_meta(conn)
        click.echo(f"anchored {ledger_module.anchor_missing(conn, late=late)} ledger row(s)")
