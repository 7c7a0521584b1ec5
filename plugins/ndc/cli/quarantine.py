"""``ndc quarantine`` (list, show, replay) and ``ndc purge`` (retention of personal data)."""

from __future__ import annotations

import json

import click

from ndc.cli.targets import warehouse_url


@click.group()
def quarantine() -> None:
    """Quarantined rows: overview, rows with their payload, and replay after a fix (docs/quarantine.md)."""


def _table(rows: list[dict], columns: list[str]) -> None:
    """Rows as a plain fixed-width table."""
    cells = [[str(row[c]) if row[c] is not None else "" for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


@quarantine.command("list")
@click.option("--dataset", help="Only this dataset (<source>.<table>).")
def quarantine_list(dataset: str | None) -> None:
    """Per dataset and failed check: rows, rows not yet replayed, still failing, loaded by a replay, and age.

    Reads the quarantine schema: needs the ndc_personal_data role."""
    from ndc.audit import quarantine as module

    warehouse_url()
    found = module.overview(dataset)
    if not found:
        click.echo("quarantine is empty" + (f" for {dataset}" if dataset else ""))
        return
    _table(found, ["dataset", "check_name", "rows", "rows_not_replayed", "rows_still_failing",
                   "rows_loaded_by_replay", "oldest_at", "oldest_age"])


@quarantine.command("show")
@click.argument("dataset")
@click.option("--check", help="Only rows that failed this check.")
@click.option("--id", "ids", multiple=True, type=int, help="Only this quarantine id (repeat the option).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row, with the whole payload.")
def quarantine_show(dataset: str, check: str | None, ids: tuple[int, ...], limit: int, as_json: bool) -> None:
    """Quarantined rows of DATASET (oldest first): id, key, checks, reasons, payload, age, replay status.

    The payload is personal data: this command is for holders of the ndc_personal_data role only."""
    from ndc.audit import quarantine as module

    warehouse_url()
    for row in module.show(dataset, check=check, ids=list(ids) or None, limit=limit):
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
            continue
        status = row["replay_outcome"] or "not replayed"
        click.echo(f"#{row['id']} key {row['record_key']}  age {row['age']}  contract v{row['contract_version']}"
                   f"  replay: {status}")
        click.echo(f"  checks:  {', '.join(row['checks'])}")
        click.echo(f"  reasons: {json.dumps(row['reasons'], ensure_ascii=False)}")
        click.echo(f"  payload: {json.dumps(row['payload'], ensure_ascii=False)}")


@quarantine.command("replay")
@click.argument("dataset")
@click.option("--check", help="Only rows that failed this check.")
@click.option("--id", "ids", multiple=True, type=int, help="Only this quarantine id (repeat the option).")
@click.option("--dry-run", is_flag=True, help="Revalidate and count; load and mark nothing.")
@click.option("--run-id", help="Run id recorded in landing, quarantine and the ledger.")
def quarantine_replay(dataset: str, check: str | None, ids: tuple[int, ...], dry_run: bool,
                      run_id: str | None) -> None:
    """Revalidate DATASET's quarantined rows with its current contract and load those that now pass.

    After a contract fix: rows no replay has loaded yet are rebuilt from their payload; those that pass are
    loaded into landing like an extract, the rest stay quarantined. Nothing is deleted; every replayed row is
    marked loaded or still_failing; one ledger row records it. duplicate_key rows are never replayed."""
    from dataclasses import asdict

    from ndc.audit import quarantine as module

    warehouse_url()
    result = module.replay(dataset, check=check, ids=list(ids) or None, run_id=run_id, dry_run=dry_run)
    click.echo(json.dumps(asdict(result), indent=2, ensure_ascii=False))


@click.command()
@click.option("--retention-days", type=click.IntRange(min=1),
              help="Keep this many days [default: NDC_RETENTION_DAYS, 730].")
@click.option("--dry-run", is_flag=True, help="Count what would be purged; delete nothing.")
@click.option("--run-id", help="Run id recorded in the ledger.")
def purge(retention_days: int | None, dry_run: bool, run_id: str | None) -> None:
    """Delete personal data past retention: quarantine rows, landing history versions that are no longer
    current and residence-snapshot versions superseded before the cutoff. The current state is never purged; one
    ledger row records the counts (and --retention-days, when given, as an override)."""
    from dataclasses import asdict

    from ndc.audit.retention import purge as purge_personal_data

    warehouse_url()
    result = purge_personal_data(retention_days=retention_days, dry_run=dry_run, run_id=run_id)
    click.echo(json.dumps({**asdict(result), "total": result.total}, indent=2, default=str))
