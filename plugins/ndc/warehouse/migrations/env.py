"""Alembic's entry point for the platform's schema, run by ``ndc.warehouse.schema`` on the connection it lends
(``config.attributes["connection"]``): there is no alembic.ini and no URL here."""

from alembic import context

from ndc.warehouse.schema import VERSION_SCHEMA, VERSION_TABLE

if context.is_offline_mode():
    raise RuntimeError("the platform's schema is upgraded on a live warehouse: `ndc warehouse upgrade`")
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run through ndc.warehouse.schema (`ndc warehouse upgrade`), which lends its connection")

context.configure(connection=connection, version_table=VERSION_TABLE, version_table_schema=VERSION_SCHEMA)
with context.begin_transaction():
    # Alembic creates its version table before the first revision runs, so that table's schema comes first.
    connection.exec_driver_sql(f"create schema if not exists {VERSION_SCHEMA}")
    context.run_migrations()
