"""``ndc warehouse``: the platform's own schema in the warehouse, its Alembic revision and its upgrade."""

from __future__ import annotations

import click

from ndc.cli.targets import warehouse_url


@click.group()
def warehouse() -> None:
    """The platform's own schema (ndc_meta, quarantine, shared) in the warehouse."""


@warehouse.command("upgrade")
def warehouse_upgrade() -> None:
    """Upgrade the platform's schema to this release's head revision (every command and DAG task also does, when it
    opens the warehouse), and print the revision."""
    from ndc.warehouse import database, schema

    with database.connect(warehouse_url()) as conn:
        before = schema.current(conn)
        database.ensure_meta(conn)
        after = schema.current(conn)
    click.echo(f"{after} (already current)" if before == after else f"{after} (upgraded from {before or 'none'})")


@warehouse.command("current")
def warehouse_current() -> None:
    """Print the revision of the platform's schema (``none`` before its first upgrade) and whether it is the head."""
    from ndc.warehouse import database, schema

    with database.connect(warehouse_url()) as conn:
        revision = schema.current(conn)
    head = schema.head()
    if revision == head:
        click.echo(f"{revision} (head)")
    elif schema.is_current(revision):
        click.echo(f"{revision} (newer than this release's head, {head})")
    else:
        click.echo(f"{revision or 'none'} (head is {head}: `ndc warehouse upgrade`)")
