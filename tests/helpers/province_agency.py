"""Consumer agencies: PostgreSQL roles that read ``security_barrier`` views over ``shared.<model>``.

An agency view filters rows (e.g. to the agency's current province) and masks personal identifiers; it reads
the published view, so it survives every publish. The role gets USAGE on its own schema and SELECT on its views,
nothing else: no CREATE anywhere, a statement timeout and a connection limit. Full sharing agreements (YAML,
approval, pseudonyms, expiry) are built on this in issue 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ndc.errors import NdcError
from ndc.identifiers import ident, is_identifier
from ndc.sharing.agreements import refuse_superuser
from ndc.warehouse.connections import database_of

MASKED_PIN = "repeat('*', 8) || right(citizen_id, 4)"


@dataclass(frozen=True)
class ProvinceAgency:
    role: str
    schema: str
    current_province_code: str
    statement_timeout: str = "30s"
    connection_limit: int = 5

    def __post_init__(self) -> None:
        for name in (self.role, self.schema):
            if not is_identifier(name):
                raise NdcError(f"agency name {name!r} is not a valid identifier")
        if not (len(self.current_province_code) == 2 and self.current_province_code.isdigit()):
            raise NdcError(f"province code {self.current_province_code!r}: expected two digits")


def apply_province_agency(conn: psycopg.Connection, agency: ProvinceAgency, warehouse_url: str) -> None:
    """Create or update the agency's role and its view of ``shared.citizens`` (idempotent)."""
    role, schema = ident(agency.role), ident(agency.schema)
    with conn.transaction():
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (agency.role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create role {} login").format(role))
        refuse_superuser(conn, agency.role)
        conn.execute(sql.SQL("alter role {} nocreatedb nocreaterole noinherit connection limit {}")
                     .format(role, sql.Literal(agency.connection_limit)))
        conn.execute(sql.SQL("alter role {} set statement_timeout = {}").format(
            role, sql.Literal(agency.statement_timeout)))
        conn.execute(sql.SQL("create schema if not exists {}").format(schema))
        conn.execute(sql.SQL("revoke all on schema {} from public").format(schema))
        conn.execute(sql.SQL(
            "create or replace view {schema}.citizens with (security_barrier = true) as"
            " select " + MASKED_PIN + " as citizen_id_masked, full_name, birth_date, sex, household_id,"
            " has_registered_household,"
            " historic_province_code, historic_province_name, current_province_code, current_province_name"
            " from shared.citizens where current_province_code = {code}"
        ).format(schema=schema, code=sql.Literal(agency.current_province_code)))
        conn.execute(sql.SQL("revoke all on all tables in schema {} from public").format(schema))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, role))
        conn.execute(sql.SQL("grant select on {}.citizens to {}").format(schema, role))
        conn.execute(sql.SQL("grant connect on database {} to {}").format(ident(database_of(warehouse_url)), role))
