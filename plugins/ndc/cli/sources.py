"""``ndc sources``: validate the source files, scaffold a new national database, write the pools."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import click

# The tooling half of the scaffold (simulator and its test), in a checkout only: see _tooling_files.
LAB_SCAFFOLD = "ndc_lab.simulate.scaffold"


@click.group()
def sources() -> None:
    """The registry of national databases (dags/sources/<agency>/<name>.yml)."""


@sources.command("validate")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False), help="Folder of source files.")
@click.option("--quiet", is_flag=True, help="Print the summary and the problems only, not a line per good file.")
def sources_validate(directory: str | None, quiet: bool) -> None:
    """Validate every source file, its contracts and its agency's DAG file; exit 2 with every problem named
    (all files are checked before it exits)."""
    import time

    from ndc.config import files
    from ndc.config.sources import load_sources, source_files
    from ndc.contracts import get_contract
    from ndc.errors import ConfigError, NdcError
    from ndc.settings import get_settings

    started = time.monotonic()
    folder = Path(directory) if directory else get_settings().sources_dir
    problems: list[str] = []
    found = load_sources(folder, problems)
    try:
        files.refuse_repeated_names(found, "source")
    except ConfigError as exc:
        problems += str(exc).splitlines()
    problems += [f"{path}: a source file belongs in its owner agency's folder, {folder}/<agency>/{path.name}: no DAG"
                 " file reads this one" for path in source_files(folder) if path.parent == folder]
    dag_files = folder.parent / "extract"
    agencies = sorted({s.path.parent.name for s in found if s.path.parent != folder})
    problems += [f"{folder / a}: the agency has no DAG file {dag_files / a}.py, so Airflow extracts none of its "
                 f"sources (`ndc sources new <name> --agency {a}` writes it)" for a in agencies
                 if not (dag_files / f"{a}.py").is_file()]
    for source in found:
        bad = []
        for table in source.tables:
            try:
                get_contract(table.contract)
            except NdcError as exc:
                bad.append(f"{source.path}: field 'tables.{table.name}.contract': {exc}")
        problems += bad
        if not quiet and not bad:
            click.echo(f"{source.path}: ok ({source.name}, {len(source.tables)} tables)")
    took = time.monotonic() - started
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in {folder} (every file checked):\n" + "\n".join(problems))
    click.echo(f"{len(found)} source files of {len(agencies)} agencies valid in {took:.1f} s")


@sources.command("new")
@click.argument("name")
@click.option("--engine", type=click.Choice(["postgresql", "mysql", "http", "files"]), default="postgresql",
              show_default=True, help="Where the national database lives.")
@click.option("--owner", default="Owner agency (Bộ ...)", show_default=True, help="The owner agency.")
@click.option("--agency", help="The owner agency's folder under sources/ [default: named from --owner].")
def sources_new(name: str, engine: str, owner: str, agency: str | None) -> None:
    """Scaffold a new source in the DAG bundle (NDC_DAGS_DIR): its YAML in the agency's folder, its contract, and
    the agency's DAG file if it has none; in a checkout with the tooling (plugins/ndc_lab), also a simulator with its
    defect manifest and a test."""
    from ndc.config.scaffold import source_files, write_files
    from ndc.settings import get_settings

    dags_dir = get_settings().dags_dir
    platform = source_files(name, engine, owner, dags_dir, agency)
    tooling = _tooling_files(name, engine, dags_dir.parent)
    for path in write_files({**platform, **tooling}):
        click.echo(f"created {path}")
    simulate = f"`ndc simulate {name}`, " if tooling else ""
    click.echo(f"next: edit them, then `ndc sources validate`, {simulate}"
               f"`ndc extract {name} records --start 2024-07-01 --end 2026-01-01`")


def _tooling_files(name: str, engine: str, checkout: Path) -> dict[Path, str]:
    """The simulator and its test, when the DAG bundle sits in a checkout that has the tooling and the tooling is
    importable; an installed platform has neither, and writes only its own files."""
    if not (checkout / "plugins" / "ndc_lab").is_dir() or importlib.util.find_spec("ndc_lab") is None:
        return {}
    return importlib.import_module(LAB_SCAFFOLD).simulator_files(name, engine, checkout)


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
