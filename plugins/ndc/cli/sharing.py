"""``ndc catalog``, ``ndc trace``, ``ndc reads`` and ``ndc agreements``: what is shared, with whom, and how."""

from __future__ import annotations

import json

import click

from ndc.cli.targets import warehouse_url
from ndc.errors import NdcError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def catalog(as_json: bool) -> None:
    """Every shared dataset: description, contract and version, owner agencies, freshness, consumers and their
    agreements (generated from the dbt manifest, the registries, ndc_meta and the applied agreements)."""
    from ndc.sharing import catalog as catalog_module
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        database.ensure_meta(conn)
        found = catalog_module.refresh(conn)
    if as_json:
        click.echo(json.dumps(catalog_module.as_dicts(found), indent=2, ensure_ascii=False))
        return
    for e in found:
        consumers = ", ".join(f"{c['agency']} ({c['agreement']})" for c in e.consumers) or "none"
        deprecated = f" — DEPRECATED, removed after {e.deprecated_on}" if e.deprecated_on else ""
        click.echo(f"shared.{e.relation}{deprecated}\n  {e.description[:160]}\n"
                   f"  contract {e.contract_name} v{e.contract_version}; owners: {'; '.join(e.owner_agencies)}\n"
                   f"  published {e.last_published_at or 'never'}; sources loaded through "
                   f"{e.sources_loaded_through or 'never'}\n  consumers: {consumers}")


@click.command()
@click.argument("relation")
@click.argument("key")
def trace(relation: str, key: str) -> None:
    """Lineage of one row of shared.RELATION (citizens, enterprises) by KEY: its landing versions, their batches and
    runs, the contract versions that validated them, the publication and the agreements it was delivered under."""
    from dataclasses import asdict

    from ndc.sharing.lineage import trace as trace_row
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        database.ensure_meta(conn)
        found = trace_row(conn, relation, key)
    click.echo(json.dumps(asdict(found), indent=2, ensure_ascii=False, default=str))


@click.group()
def reads() -> None:
    """Consumer reads per login and view (counted by the agency views themselves)."""


@reads.command("collect")
def reads_collect() -> None:
    """Add the agency reads since the last collection to ndc_meta.consumer_reads (and the ledger)."""
    from ndc.sharing.reads import collect
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        database.ensure_meta(conn)
        found = collect(conn)
    click.echo(f"{found.reads} read(s): "
               + ", ".join(f"{r} {v} {n}" for (r, v), n in sorted(found.per_view.items())))


@click.group()
def agreements() -> None:
    """Sharing agreements (dags/agreements/*.yml) with consumer agencies (dags/agencies/*.yml)."""


@agreements.command("validate")
def agreements_validate() -> None:
    """Validate every agency and agreement file (against the shared views in the dbt manifest)."""
    from ndc.config.agreements import load_agencies, load_agreements
    from ndc.conform import dbt

    agencies = load_agencies()
    found = load_agreements(agencies=agencies, shared=dbt.shared_models())
    for agreement in found.values():
        click.echo(f"{agreement.path}: ok ({agreement.consumer}: {', '.join(v.shared for v in agreement.views)}; "
                   f"{agreement.start} to {agreement.expires})")


@agreements.command("approve")
@click.argument("agreement_id")
@click.option("--note", help="Recorded with the approval (e.g. the decision's reference).")
@click.option("--yes", is_flag=True, help="Approve without asking (the parsed agreement is still shown).")
def agreements_approve(agreement_id: str, note: str | None, yes: bool) -> None:
    """Show AGREEMENT_ID as parsed (views, columns, masks, filters, dates, the consumer's logins), then approve it
    as it is now (its file's SHA-256 and those logins), connecting as NDC_APPROVER_URL: a member of ndc_approver,
    never the role that deploys the platform. The approval is recorded in the ledger."""
    from ndc.config.agreements import load_agencies, load_agreements
    from ndc.conform import dbt
    from ndc.settings import get_settings
    from ndc.sharing.agreements import approve

    url = get_settings().approver_url
    if not url:
        raise NdcError("set NDC_APPROVER_URL: the approver's own connection (a member of ndc_approver)")
    agencies = load_agencies()
    found = load_agreements(agencies=agencies, shared=dbt.shared_models())
    if agreement_id not in found:
        raise NdcError(f"no agreement {agreement_id!r} (agreements: {', '.join(found) or 'none'})")
    agreement = found[agreement_id]
    agency = agencies[agreement.consumer]
    click.echo(describe(agreement, agency))
    if not yes and not click.confirm("Approve exactly this?", default=False):
        raise NdcError(f"{agreement_id}: not approved")
    approval = approve(url, agreement, agency, note)
    click.echo(f"approved {agreement_id} (approval {approval}, sha256 {agreement.content_sha256[:16]}…, "
               f"logins {', '.join(sorted(u.login for u in agency.users))}); recorded in the ledger")


def describe(agreement, agency) -> str:
    """The agreement as the platform parsed it: what the approver approves (not the file's text, which YAML may
    read otherwise than it looks)."""
    lines = [f"agreement {agreement.id} ({agreement.path}, sha256 {agreement.content_sha256})",
             f"  consumer: {agency.name} ({agency.full_name})",
             f"  logins: {', '.join(sorted(u.login for u in agency.users))}",
             f"  purpose: {' '.join(agreement.purpose.split())}",
             f"  valid: {agreement.start} to {agreement.expires} (inclusive, Việt Nam time)"]
    if agreement.purpose_allows_identifiers:
        lines.append("  purpose allows personal identifiers in clear")
    lines.append(f"  request purposes (the sharing service): {', '.join(agreement.purposes) or 'none (SQL only)'}")
    if agreement.quasi_identifiers_in_clear:
        clear = ", ".join(agreement.quasi_identifiers_in_clear)
        lines.append(f"  quasi-identifiers in clear beside a pseudonym: {clear}")
    for view in agreement.views:
        lines.append(f"  view agency_{agency.name}.{view.shared} over shared.{view.shared}")
        lines.append(f"    columns: {', '.join(view.columns)}")
        lines.append(f"    masked: {', '.join(f'{c} ({m})' for c, m in view.masked.items()) or 'none'}")
        rows = " and ".join(f"{c} in {v if isinstance(v, list) else [v]}" for c, v in view.row_filter.items())
        lines.append(f"    rows: {rows or 'ALL ROWS (no row filter)'}")
    return "\n".join(lines)


@agreements.command("withdraw")
@click.argument("agreement_id")
@click.option("--reason", required=True, help="Why the approval is withdrawn (recorded).")
def agreements_withdraw(agreement_id: str, reason: str) -> None:
    """Withdraw the approval of AGREEMENT_ID, connecting as NDC_APPROVER_URL; recorded in the ledger. The next
    `ndc agreements apply` revokes its views."""
    from ndc.settings import get_settings
    from ndc.sharing.agreements import withdraw

    url = get_settings().approver_url
    if not url:
        raise NdcError("set NDC_APPROVER_URL: the approver's own connection (a member of ndc_approver)")
    ids = withdraw(url, agreement_id, reason)
    click.echo(f"withdrew approval(s) {', '.join(map(str, ids))} of {agreement_id}; recorded in the ledger")


@agreements.command("apply")
@click.option("--run-id", help="Run id recorded in the ledger.")
def agreements_apply(run_id: str | None) -> None:
    """Agency roles, then views and grants for every approved, current agreement; revoke the rest (idempotent)."""
    from ndc.sharing.agreements import apply
    from ndc.warehouse import database

    url = warehouse_url()
    with database.connect(url) as conn:
        database.ensure_meta(conn)
        result = apply(conn, url, run_id=run_id)
    click.echo(json.dumps(result.__dict__, indent=2))
