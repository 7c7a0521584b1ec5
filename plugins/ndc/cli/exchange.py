"""``ndc exchange``: validate the direct-exchange files and run one exchange over an interval."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from ndc.cli.targets import as_utc, warehouse_url


@click.group()
def exchange() -> None:
    """Direct exchanges (dags/exchanges/*.yml): provider database -> contract -> consumer database."""


@exchange.command("validate")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False), help="Folder of exchange files.")
def exchange_validate(directory: str | None) -> None:
    """Validate every exchange file and its contract; exit 2 with the problems named by file and field."""

    from ndc.config.exchanges import exchanges_dir, load_exchanges
    from ndc.sharing.exchange import check_contract

    for config in load_exchanges(Path(directory) if directory else exchanges_dir()):
        contract = check_contract(config)
        click.echo(f"{config.path}: ok ({config.provider_agency} -> {config.consumer_agency}, contract "
                   f"{contract.name} v{contract.version})")


@exchange.command("run")
@click.argument("name")
@click.option("--start", required=True, type=click.DateTime(), help="Interval start (UTC unless an offset is given).")
@click.option("--end", required=True, type=click.DateTime(), help="Interval end, exclusive.")
@click.option("--run-id", help="Run id recorded in the consumer's table and the ledger.")
def exchange_run(name: str, start: datetime, end: datetime, run_id: str | None) -> None:
    """Deliver exchange NAME's rows of [START - lookback, END) that pass its contract to the consumer (needs
    NDC_EXCHANGE_HASH_KEY); prints the counts."""
    from ndc.sharing.exchange import hash_key, run_exchange
    from ndc.warehouse import database

    if as_utc(end) <= as_utc(start):
        raise click.BadParameter("--end must be after --start")
    hash_key()  # before the embedded server is started for nothing
    database.ensure_database(warehouse_url())
    result = run_exchange(name, as_utc(start), as_utc(end), run_id=run_id)
    click.echo(json.dumps(result.__dict__, indent=2, ensure_ascii=False))
