"""``ndc extract`` and ``ndc compare``: one table's extract-and-load over an interval, and its full compare."""

from __future__ import annotations

import json
from datetime import datetime

import click

from ndc.cli.targets import as_utc, warehouse_url


@click.command()
@click.argument("source")
@click.argument("table")
@click.option("--start", required=True, type=click.DateTime(), help="Interval start (UTC unless an offset is given).")
@click.option("--end", required=True, type=click.DateTime(), help="Interval end, exclusive.")
@click.option("--run-id", help="Run id recorded in landing, quarantine and the ledger.")
@click.option("--full-refresh", is_flag=True, help="Extract everything up to --end (files: reload every file).")
@click.option("--accept-row-drop", is_flag=True,
              help="Load even if the row count fell more than the table's row_count_drop rule allows.")
def extract(source: str, table: str, start: datetime, end: datetime, run_id: str | None,
            full_refresh: bool, accept_row_drop: bool) -> None:
    """Extract one table's interval [START - lookback, END), gate it and load it into landing."""
    from ndc.tasks import extract_table

    if as_utc(end) <= as_utc(start):
        raise click.BadParameter("--end must be after --start")
    from ndc.warehouse import database

    database.ensure_database(warehouse_url())
    result = extract_table(source, table, as_utc(start), as_utc(end), run_id=run_id, full_refresh=full_refresh,
                           accept_row_drop=accept_row_drop)
    click.echo(json.dumps(result.__dict__, indent=2, ensure_ascii=False))


@click.command()
@click.argument("source")
@click.argument("table")
@click.option("--allow-mass-delete", is_flag=True, help="Mark rows deleted even when most keys are gone.")
@click.option("--run-id", help="Run id recorded in the ledger.")
def compare(source: str, table: str, allow_mass_delete: bool, run_id: str | None) -> None:
    """Full compare: mark landing rows whose key is gone from the source (hard deletes)."""
    from dataclasses import asdict

    from ndc.landing.full_compare import compare_table

    warehouse_url()
    result = compare_table(source, table, run_id=run_id, allow_mass_delete=allow_mass_delete)
    click.echo(json.dumps(asdict(result), indent=2, ensure_ascii=False))
