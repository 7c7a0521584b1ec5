"""``ndc sources``: validate the source files, scaffold a new national database, write the pools."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def sources() -> None:
    """The registry of national databases (dags/sources/*.yml)."""


@sources.command("validate")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False), help="Folder of source files.")
def sources_validate(directory: str | None) -> None:
    """Validate every source file and its contracts; exit 1 with every problem named."""

    from ndc.config.sources import load_sources
    from ndc.contracts import get_contract
    from ndc.settings import get_settings

    folder = Path(directory) if directory else get_settings().sources_dir
    for source in load_sources(folder):
        for table in source.tables:
            get_contract(table.contract)
        click.echo(f"{source.path}: ok ({source.name}, {len(source.tables)} tables)")


@sources.command("new")
@click.argument("name")
@click.option("--engine", type=click.Choice(["postgresql", "mysql", "http", "files"]), default="postgresql",
              show_default=True, help="Where the national database lives.")
@click.option("--owner", default="Owner agency (Bộ ...)", show_default=True, help="The owner agency.")
def sources_new(name: str, engine: str, owner: str) -> None:
    """Scaffold a new source: YAML, contract, simulator with its defect manifest, and a test."""
    from ndc.config.scaffold import new_source

    made = new_source(name, engine, owner)
    for path in made.files:
        click.echo(f"created {path}")
    click.echo(f"next: edit them, then `ndc sources validate`, `ndc simulate {name}` and "
               f"`ndc extract {name} records --start 2024-07-01 --end 2026-01-01`")


@sources.command("pools")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the JSON to this file (Airflow may log to"
              " stdout while the DAG factory is imported, which would spoil a redirected stdout).")
def sources_pools(output: str | None) -> None:
    """Print the Airflow pools (one per source, max_connections slots) for `airflow pools import`."""

    from ndc.config.sources import load_sources, pools
    from ndc.settings import get_settings

    text = json.dumps(pools(load_sources(get_settings().sources_dir)), indent=2, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"pools written to {output}: airflow pools import {output}")
    else:
        click.echo(text)
