"""``ndc contracts``: list the registered contracts, check them against the released ones, release them."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group("contracts")
def contracts_group() -> None:
    """The contract registry: versions, breaking-change check against released.json, agreement with dbt."""


@contracts_group.command("list")
def contracts_list() -> None:
    """Every registered contract: name, version, columns, dataset kind (landing table or shared view)."""
    from ndc.contracts import all_contracts

    for contract in all_contracts():
        click.echo(f"{contract.name:<34} {contract.version:<8} {len(contract.columns):>3} columns  {contract.kind}")


@contracts_group.command("check")
@click.option("--released", "released_path", type=click.Path(dir_okay=False),
              help="Released schemas [default: plugins/ndc/contracts/released.json].")
@click.option("--manifest", type=click.Path(dir_okay=False), help="dbt manifest [default: the project's].")
def contracts_check(released_path: str | None, manifest: str | None) -> None:
    """Exit 1 on a breaking change under a released major, or a shared contract that disagrees with dbt."""

    from ndc.contracts import all_contracts
    from ndc.contracts.compat import RELEASED, check, dbt_agreement, load_released

    report = check(list(all_contracts()), load_released(Path(released_path) if released_path else RELEASED))
    disagreements = dbt_agreement(Path(manifest) if manifest else None)
    for change in report.new_versions:
        click.echo(f"new version: {change}")
    for change in report.unreleased:
        click.echo(f"unreleased: {change}")
    for change in report.retired:
        click.secho(f"retired: {change}", fg="yellow")
    for change in report.breaking:
        click.secho(f"breaking: {change}", fg="red", err=True)
    for problem in disagreements:
        click.secho(f"dbt disagrees: {problem}", fg="red", err=True)
    if report.breaking or disagreements:
        click.secho(f"contracts check failed: {len(report.breaking)} breaking change(s), {len(disagreements)} "
                    "disagreement(s) with dbt; ship a breaking change as a new major version", fg="red", err=True)
        sys.exit(1)
    click.echo(f"contracts ok: {len(all_contracts())} registered, no breaking change, shared contracts agree with dbt")


@contracts_group.command("release")
@click.option("--released", "released_path", type=click.Path(dir_okay=False),
              help="Released schemas [default: plugins/ndc/contracts/released.json].")
def contracts_release(released_path: str | None) -> None:
    """Record the registry's schemas in released.json: new majors and non-breaking changes (never a breaking one)."""

    from ndc.contracts import all_contracts
    from ndc.contracts.compat import RELEASED, check, load_released, release, write_released

    path = Path(released_path) if released_path else RELEASED
    released = load_released(path)
    report = check(list(all_contracts()), released)
    write_released(release(list(all_contracts()), released), path)  # raises, writing nothing, on a breaking change
    for change in report.new_versions + report.unreleased:
        click.echo(f"released {change.contract} v{change.major}: {change.kind}")
    click.echo(f"{path}: {len(report.new_versions)} new version(s), {len(report.unreleased)} change(s) recorded")
