"""``ndc service`` (the data-sharing HTTP service, its tokens and its request log) and ``ndc tracker`` (who received
a citizen's record)."""

from __future__ import annotations

import json
from datetime import timedelta

import click

from ndc.cli.targets import warehouse_url
from ndc.errors import NdcError


@click.group()
def service() -> None:
    """The data-sharing service: agencies' systems call it over HTTP; every request is a logged transaction."""


@service.command("serve")
@click.option("--host", default=None, help="Address to listen on (default NDC_SERVICE_HOST).")
@click.option("--port", type=int, default=None, help="Port (default NDC_SERVICE_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Run the service (uvicorn, one process: the rate limit and the request log's batches are per process)."""
    import uvicorn

    from ndc.service.app import FastLookups, create_app
    from ndc.settings import get_settings
    from ndc.warehouse import database

    settings = get_settings()
    # The service's own login (a deployment's NDC_SERVICE_URL), else the warehouse's (the embedded server, started).
    url = settings.service_url if settings.raw("NDC_SERVICE_URL") else warehouse_url()
    with database.connect(url) as conn:
        database.ensure_meta(conn)  # current already, or installed by a role that may (never by the service's login)
    uvicorn.run(FastLookups(create_app(settings)), host=host or settings.service_host,
                port=port or settings.service_port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", proxy_headers=False, server_header=False)


@service.group("token")
def token() -> None:
    """Client credentials: a bearer token per agency login (or per citizen portal, for the tracker)."""


@token.command("issue")
@click.argument("login")
@click.option("--portal", is_flag=True, help="LOGIN names a citizen portal: the token reads the tracker only.")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True, help="Valid for this long.")
def token_issue(login: str, portal: bool, days: int) -> None:
    """Issue a token for agency login LOGIN; it is printed once (only its hash is kept) and recorded."""
    from ndc.service import tokens
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        database.ensure_meta(conn)
        issued = tokens.issue(conn, login=login, scope="tracker" if portal else "agency", days=days)
    click.echo(issued)


@token.command("revoke")
@click.argument("token_id")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
def token_revoke(token_id: str, reason: str) -> None:
    """Revoke token TOKEN_ID (the part between `ndc_` and the dot)."""
    from ndc.service import tokens
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        tokens.revoke(conn, token_id, reason)
    click.echo(f"token {token_id} revoked")


@token.command("list")
def token_list() -> None:
    """Every token issued (never a secret)."""
    from ndc.service import tokens
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        for token_id, scope, login, agency, issued, expires, revoked in tokens.listed(conn):
            state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else f"expires {expires:%Y-%m-%d}" if expires \
                else "no expiry"
            click.echo(f"{token_id}  {scope:<7} {login} {agency}  issued {issued:%Y-%m-%d %H:%M}, {state}")


@service.command("seal")
@click.option("--idle-seconds", type=click.IntRange(1), default=300, show_default=True,
              help="Seal only batches that got no request for this long.")
def seal(idle_seconds: int) -> None:
    """Seal in the ledger the request-log batches a stopped service left unsealed (each marked late)."""
    from ndc.service import requestlog
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        sealed = requestlog.seal_unsealed(conn, timedelta(seconds=idle_seconds))
    click.echo(f"{len(sealed)} batch(es) sealed late: {sealed}" if sealed else "no batch left unsealed")


@service.command("verify")
def verify() -> None:
    """Recompute every sealed batch of the request log against the SHA-256 its ledger row holds."""
    from ndc.service import requestlog
    from ndc.warehouse import database

    with database.connect(warehouse_url()) as conn:
        checked, problems = requestlog.verify(conn)
    if problems:
        raise NdcError("the request log does not match the ledger:\n  " + "\n  ".join(problems))
    click.echo(f"{checked} sealed batch(es) of the request log match the ledger")


@click.command()
@click.argument("pin")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def tracker(pin: str, as_json: bool) -> None:
    """Every agency that received the record of the citizen with PIN: when, under which agreement and purpose,
    through the service or a delivery (from the request log and the ledger)."""
    from ndc.service.tracker import track

    if not (len(pin) == 12 and pin.isdigit()):
        raise NdcError(f"a PIN is 12 digits, not {pin!r}")
    receipts = track(warehouse_url(), pin)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in receipts], indent=2, ensure_ascii=False))
        return
    if not receipts:
        click.echo("no agency received this record through the service or a delivery")
    for r in receipts:
        click.echo(f"{r.at:%Y-%m-%d %H:%M:%S}  {r.agency:<24} {r.channel:<8} {r.agreement} ({r.purpose or '-'})"
                   f"  {r.view or ''} {r.login or ''}")
