"""The operator's reading session and its queries: aggregate views of ``ndc_meta`` only, as the role ``ndc_operator``.

The session connects with ``NDC_OPERATOR_URL`` (a LOGIN role in ``ndc_operator``) when it is set, else with the
warehouse URL; either way it then runs ``SET ROLE ndc_operator`` with ``default_transaction_read_only`` on, so every
query runs with the reader's privileges — SELECT on the ``ndc_meta.ops_*`` views and ``contract_pass_rates``, and
nothing on quarantine, landing or the ledger. (SET ROLE is no boundary against code in the same process: deployments
set ``NDC_OPERATOR_URL``; the fallback serves the embedded demo.) Each request reads one consistent snapshot
(a read-only repeatable-read transaction) under a short connect and statement timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg.rows import dict_row

from ndc.errors import NdcError
from ndc.settings import get_settings
from ndc.warehouse.connections import redact

OPERATOR_ROLE = "ndc_operator"
OPERATOR_URL_ENV = "NDC_OPERATOR_URL"
# What ndc_operator may read (granted by the platform's schema, ndc.warehouse.schema); nothing else.
READABLE = ("ndc_meta.ops_last_loads", "ndc_meta.ops_freshness_inputs", "ndc_meta.ops_open_quarantine",
            "ndc_meta.ops_open_alerts", "ndc_meta.ops_sharing_transactions", "ndc_meta.contract_pass_rates")
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000


class WarehouseUnavailable(NdcError):
    """The page cannot read the warehouse (unreachable, or not yet upgraded for the page). The message names the
    server without its password."""


def reader_url() -> str:
    return get_settings().operator_url


@contextmanager
def reader(url: str | None = None) -> Iterator[psycopg.Connection]:
    """A read-only session as ``ndc_operator`` (see the module's docstring)."""
    url = url or reader_url()
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c default_transaction_read_only=on -c TimeZone=UTC"
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=options,
                               application_name="ndc-operator-page")
    except psycopg.OperationalError as exc:
        raise WarehouseUnavailable(f"cannot connect to {redact(url)}: {str(exc).strip()}") from None
    try:
        try:
            conn.execute(f"set role {OPERATOR_ROLE}")
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.InsufficientPrivilege) as exc:
            raise WarehouseUnavailable(
                f"{redact(url)}: cannot act as {OPERATOR_ROLE} ({exc.diag.message_primary}): the role is made by "
                f"ndc_meta version 7 (any `ndc` command that opens the warehouse upgrades it); a login must be a member"
                f" (create role <name> login in role {OPERATOR_ROLE}) and be given as {OPERATOR_URL_ENV}") from None
        yield conn
    finally:
        conn.close()


@dataclass
class Snapshot:
    """What the page shows, as read in one transaction."""

    now: datetime
    since: date
    last_loads: list[dict]
    freshness_inputs: list[dict]
    pass_rates_daily: list[dict]
    pass_rates_by_dataset: list[dict]
    quarantine: list[dict]
    alerts: list[dict]
    sharing_daily: list[dict]
    sharing_by_unit: list[dict]


_RATES = ("round(1 - sum(rows_failed)::numeric / nullif(sum(rows_checked), 0), 6) as row_pass_rate,"
          " round(sum(passed)::numeric / nullif(sum(validations), 0), 6) as validation_pass_rate")
_COUNTS = ("sum(validations)::bigint as validations, sum(passed)::bigint as passed,"
                " sum(failed_rows_quarantined)::bigint as failed, sum(blocked)::bigint as blocked,"
                " sum(rows_checked)::bigint as rows_checked, sum(rows_failed)::bigint as rows_failed")
QUERIES = {
    "last_loads": "select * from ndc_meta.ops_last_loads order by dataset",
    "freshness_inputs": "select * from ndc_meta.ops_freshness_inputs order by dataset",
    "pass_rates_daily": f"select day::date as day, {_COUNTS}, {_RATES} from ndc_meta.contract_pass_rates"
                        " where day >= %(since)s group by 1 order by 1",
    "pass_rates_by_dataset": f"select dataset, gate, {_COUNTS}, {_RATES}, max(day)::date as last_day"
                             " from ndc_meta.contract_pass_rates where day >= %(since)s"
                             " group by dataset, gate order by dataset, gate",
    "quarantine": "select dataset, check_name, all_checks, open_rows, rows_not_replayed, rows_still_failing,"
                  " oldest_at, newest_at from ndc_meta.ops_open_quarantine"
                  " order by dataset, all_checks desc, open_rows desc, check_name",
    "alerts": "select dataset, check_name, failures, first_failed_at, last_failed_at, dag_id, task_id, owner_agency,"
              " last_run_id from ndc_meta.ops_open_alerts order by last_failed_at desc, dataset, check_name",
    "sharing_daily": "select day, coalesce(agency, '(unknown)') as agency, sum(transactions)::bigint as transactions"
                     " from ndc_meta.ops_sharing_transactions where day >= %(since)s group by 1, 2 order by 1, 2",
    "sharing_by_unit": "select coalesce(agency, '(unknown)') as agency, unit, sum(transactions)::bigint as"
                       " transactions from ndc_meta.ops_sharing_transactions where day >= %(since)s"
                       " group by 1, 2 order by 1, 2",
}


def read(conn: psycopg.Connection, days: int) -> Snapshot:
    """Every panel's figures for the last ``days`` days (UTC), in one read-only snapshot."""
    try:
        with conn.transaction():
            conn.execute("set transaction isolation level repeatable read, read only")
            now, since = conn.execute("select now(), current_date - %s::int", (days - 1,)).fetchone()
            found = {}
            with conn.cursor(row_factory=dict_row) as cur:
                for name, statement in QUERIES.items():
                    found[name] = cur.execute(statement, {"since": since}).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
        raise WarehouseUnavailable(
            f"{redact(reader_url())}: {exc.diag.message_primary}: the operator's views and their grants come with"
            " ndc_meta version 7 (any `ndc` command that opens the warehouse upgrades it)") from None
    except psycopg.Error as exc:
        raise WarehouseUnavailable(f"reading {redact(reader_url())} failed: {str(exc).strip()}") from None
    return Snapshot(now=now, since=since, **found)
