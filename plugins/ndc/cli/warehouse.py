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


@warehouse.command("bootstrap")
def warehouse_bootstrap() -> None:
    """Run once by the database administrator (NDC_ADMIN_URL), and again for a release with a new schema revision:
    the platform's roles, the warehouse database, the schema (owned by ndc_custodian) and the runtime role's
    grants (the user of NDC_WAREHOUSE_URL, which gets no CREATEROLE or CREATEDB), and the ledger's anchor when
    NDC_LEDGER_ANCHOR_URL names one (its writer may only INSERT and SELECT), and the sharing service's login when
    NDC_SERVICE_URL names one (a member of ndc_service). See docs/security.md."""
    from ndc.errors import NdcError
    from ndc.settings import get_settings
    from ndc.warehouse.bootstrap import bootstrap, bootstrap_anchor

    settings = get_settings()
    admin = settings.admin_url
    if not admin:
        raise NdcError("set NDC_ADMIN_URL: the database administrator's connection (used by the bootstrap only)")
    done = bootstrap(admin, warehouse_url(), settings.service_url if settings.raw("NDC_SERVICE_URL") else None)
    if settings.ledger_anchor_url:
        done.steps += bootstrap_anchor(admin, settings.ledger_anchor_url)
    for step in done.steps:
        click.echo(step)
    click.echo(f"bootstrapped {done.database} for runtime role {done.runtime} (schema {done.revision})")
