"""``ndc dbt`` and ``ndc conform``: the dbt project, and the whole write-audit-publish by hand."""

from __future__ import annotations

import click

from ndc.cli.targets import warehouse_url
from ndc.errors import NdcError


@click.group("dbt")
def dbt_group() -> None:
    """The dbt project (dbt_project/)."""


@dbt_group.command("parse")
def dbt_parse() -> None:
    """Write dbt_project/target/manifest.json, which the conform DAG is rendered from."""
    from ndc.conform import dbt

    click.echo(f"manifest written: {dbt.parse()}")


@dbt_group.command("build")
@click.option("--build-schema", type=click.Choice(["shared_a", "shared_b"]),
              help="Build schema [default: the one consumers are not reading].")
@click.option("--run-id", help="Run id under which each node's result is recorded (ndc_meta.conform_nodes).")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
def dbt_build(build_schema: str | None, run_id: str | None, full_refresh: bool) -> None:
    """The conform DAG's dbt.build task by hand: one dbt build of the project into a build schema, each node's
    result recorded; publishes nothing (``ndc conform`` does the whole write-audit-publish)."""
    import json

    from ndc.audit.handoff import new_run_id
    from ndc.conform.dbt_build import run_dbt_build
    from ndc.conform.publish import inactive_schema
    from ndc.warehouse import database

    if build_schema is None:
        with database.connect(warehouse_url()) as conn:
            database.ensure_meta(conn)
            build_schema = inactive_schema(conn)
    result = run_dbt_build(build_schema, run_id or new_run_id("dbt_build"), covered=set(), full_refresh=full_refresh)
    click.echo(json.dumps({"build_schema": build_schema, **result}))


@dbt_group.command("docs")
def dbt_docs() -> None:
    """Generate the dbt docs site (every model, column, test, source and exposure) from the warehouse."""
    from ndc.conform import dbt
    from ndc.conform.publish import inactive_schema
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        database.ensure_meta(conn)
        schema = inactive_schema(conn)
    result = dbt.run(["docs", "generate"], build_schema=schema)
    if result.returncode != 0:
        raise NdcError(f"dbt docs generate failed:\n{result.output[-3000:]}")
    site = dbt.project_dir() / "target"
    click.echo(f"docs written to {site}/index.html (serve them with: python -m http.server -d {site})")


@click.command()
@click.option("--run-id", help="Run id recorded in the ledger.")
@click.option("--accept-stale", is_flag=True,
              help="Build even if a source is past its freshness error threshold (reported either way).")
@click.option("--accept-row-change", is_flag=True,
              help="Publish even if a shared model's row count changed more than NDC_PUBLISH_MAX_ROW_CHANGE allows.")
@click.option("--full-refresh", is_flag=True,
              help="Rebuild every model from scratch and publish by a view switch, instead of the delta of what "
                   "changed.")
@click.option("--source", "sources", multiple=True,
              help="Build only the part of the graph downstream of this source (repeat for several; default all).")
def conform(run_id: str | None, accept_stale: bool, accept_row_change: bool, full_refresh: bool,
            sources: tuple[str, ...]) -> None:
    """Source-freshness gate, then a full build (first run, --full-refresh, or a changed dbt project) or the delta
    of what changed since the last publish, then gate 2 and publish (write-audit-publish).

    If a source is stale or the build fails nothing is published: consumers keep reading the last good version."""
    from ndc.tasks import conform as run_conform

    published = run_conform(run_id=run_id, accept_stale=accept_stale, accept_row_change=accept_row_change,
                            full_refresh=full_refresh, sources=list(sources) or None, echo=True)
    not_fresh = {k: v for k, v in published["freshness"].items() if v != "pass"}
    if not_fresh:
        click.echo(f"source freshness: {not_fresh}")
    click.echo(f"conform run {published['conform_seq']}: {published['mode']} ({published['reason']}); "
               f"published {published['rows']} in {published['build_schema']}")
