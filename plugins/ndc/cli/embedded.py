"""``ndc stop``: the embedded PostgreSQL server."""

from __future__ import annotations

import click


@click.command()
def stop() -> None:
    """Stop the embedded PostgreSQL server."""
    from ndc.warehouse import embedded

    click.echo("embedded PostgreSQL stopped" if embedded.stop() else "embedded PostgreSQL was not running")
