"""The ``ndc`` command line: every DAG task is one of these commands, so any step can be run by hand.

One module per command group. Heavy modules (polars, pandera, Faker) are imported inside the commands, so
``ndc --help`` starts fast. The tooling's commands (``simulate``, ``demo``, ``airflow``, ``faults``, ``bench``)
live in ``ndc_lab.cli`` beside the platform and are imported only when one of them is run.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from ndc.cli import (
    conform,
    contracts,
    embedded,
    exchange,
    extract,
    ledger,
    quarantine,
    service,
    sharing,
    sources,
    warehouse,
)
from ndc.errors import NdcError

# Command name -> attribute of ndc_lab.cli (the tooling beside the platform; absent from a platform-only install).
LAB_COMMANDS = {"simulate": "simulate", "demo": "demo", "airflow": "airflow_ui", "faults": "faults",
                "bench": "bench"}
LAB_MODULE = "ndc_lab.cli"


def _lab_installed() -> bool:
    return importlib.util.find_spec("ndc_lab") is not None


class _Cli(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(LAB_COMMANDS if _lab_installed() else ())})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAB_COMMANDS and _lab_installed():
            return getattr(importlib.import_module(LAB_MODULE), LAB_COMMANDS[cmd_name])
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NdcError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Cli)
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
def main(verbose: bool) -> None:
    """NDC Data Sharing & Coordination Platform."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for command in (extract.extract, extract.compare, ledger.ledger, sources.sources, contracts.contracts_group,
                exchange.exchange, quarantine.quarantine, quarantine.purge, sharing.catalog, sharing.trace,
                sharing.reads, sharing.agreements, conform.dbt_group, conform.conform, embedded.stop,
                warehouse.warehouse, service.service, service.tracker):
    main.add_command(command)
