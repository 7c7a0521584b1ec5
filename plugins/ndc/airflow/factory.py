"""Turn each validated source file into an Airflow 3 extract DAG.

One DAG per national database (``extract_<source>``), time-scheduled with ``catchup=True`` and
``max_active_runs=1`` so missed intervals load in order; one task per table, each task one library call
(:func:`ndc.tasks.extract_table`, also ``ndc extract``) over the run's data interval; each task emits an Asset for
its landing table, on which the conform DAG is scheduled.

Parsing touches no database and imports neither pandera nor polars: those load inside the task.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task

from ndc.airflow.callbacks import contract_alert, dag_callbacks
from ndc.config.sources import SourceConfig, agency_of, load_agency_sources, load_sources, pool_name
from ndc.errors import ConfigError
from ndc.settings import get_settings
from ndc.warehouse.connections import env_name


def default_args() -> dict:
    """The platform's task defaults; retries and their first delay are operators' settings (read when a DAG is
    built, i.e. when its file is parsed)."""
    settings = get_settings()
    return {
        "owner": "ndc-data-team",
        "retries": settings.task_retries,
        "retry_delay": settings.retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=20),
    }


def warehouse_uri(schema: str, table: str) -> str:
    """A warehouse table's Asset URI, in the form dbt's Airflow integrations use (no connection is made)."""
    parts = urlsplit(get_settings().warehouse_url)
    return f"postgres://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}/{schema}/{table}"


def landing_asset(schema: str, table: str) -> Asset:
    """The Asset of a landing table, named ``<schema>.<table>``."""
    return Asset(name=f"{schema}.{table}", uri=warehouse_uri(schema, table), group="landing")


def _doc(source: SourceConfig) -> str:
    tables = "\n".join(f"| `{t.name}` | `{t.source_schema}.{t.source_table}` | {', '.join(t.primary_key)} | "
                       f"`{t.incremental_column}` | `{t.contract}` |" for t in source.tables)
    return f"""### Extract: {source.name}

{source.description}

**Owner agency:** {source.owner_agency} · **connection model:** {source.connection_model} ·
**connection:** `{env_name(source.connection.conn_id)}` ({source.connection.engine}) ·
**look-back:** {source.lookback} · **pool:** `{pool_name(source)}` ({source.max_connections} slots)

Each run loads `[data_interval_start - look-back, data_interval_end)` into `{source.landing_schema}`, gated by
the table's contract; failing rows go to `quarantine.rows` with the checks they failed, and each table writes
one `ndc_meta.ledger` row. Reruns and backfills are idempotent.

| table | source | key | incremental | contract |
|---|---|---|---|---|
{tables}

Rerun one table by hand: `ndc extract {source.name} <table> --start <interval start> --end <interval end>`.
Trigger with `{{"full_refresh": true}}` to reload everything up to the interval end (idempotent).
Config: `{source.path}`.
"""


def _table_task(source: SourceConfig, table_name: str):
    path = str(source.path)

    dataset = f"{source.name}.{table_name}"

    @task(task_id=f"extract_{table_name}", outlets=[landing_asset(source.landing_schema, table_name)],
          pool=pool_name(source),
          # one alert when the task has failed for good (not per retry); a later success closes it
          on_failure_callback=[contract_alert(dataset, source.owner_agency, source.owner_contact)])
    def extract(data_interval_start=None, data_interval_end=None, run_id=None, params=None) -> dict:
        from dataclasses import asdict

        from ndc.config.sources import load_source
        from ndc.tasks import extract_table

        params = params or {}
        result = extract_table(load_source(Path(path)), table_name, data_interval_start, data_interval_end,
                               run_id=run_id, full_refresh=bool(params.get("full_refresh")),
                               accept_row_drop=bool(params.get("accept_row_drop")))
        return asdict(result)

    return extract()


def _compare_task(source: SourceConfig, table_name: str):
    path = str(source.path)

    @task(task_id=f"compare_{table_name}", pool=pool_name(source))
    def compare(run_id=None, params=None) -> dict:
        from dataclasses import asdict

        from ndc.config.sources import load_source
        from ndc.landing.full_compare import compare_table

        result = compare_table(load_source(Path(path)), table_name, run_id=run_id,
                               allow_mass_delete=bool((params or {}).get("allow_mass_delete")))
        return asdict(result)

    return compare()


def build_compare_dag(source: SourceConfig) -> DAG:
    """The scheduled full compare of a SQL source: finds rows deleted without a tombstone."""
    with DAG(
        dag_id=f"compare_{source.name}",
        description=f"Find rows deleted at {source.name} (full key compare with {source.landing_schema})",
        schedule=source.full_compare_schedule,
        start_date=pendulum.datetime(source.start_date.year, source.start_date.month, source.start_date.day,
                                     tz="UTC"),
        catchup=False,  # only the source's current keys matter: one compare per tick is enough
        max_active_runs=1,
        default_args=default_args(),
        tags=["compare", source.name],
        **dag_callbacks(source.owner_agency, source.owner_contact),
        params={"allow_mass_delete": Param(False, type="boolean",
                                           description="Mark rows deleted even when most keys are gone")},
        doc_md=f"""### Full compare: {source.name}

Streams every current key of each table of `{source.name}` and marks landing rows whose key is gone
(`_ndc_deleted_at`, `_ndc_deleted_by = 'full_compare'`); rows are kept, and a key that comes back is unmarked.
One ledger row (`kind = full_compare`) per table. Refuses when most keys are gone (a broken source looks like
that) unless triggered with `{{"allow_mass_delete": true}}`. By hand: `ndc compare {source.name} <table>`.
""",
    ) as dag:
        for table in source.tables:
            _compare_task(source, table.name)
    return dag


def interval_dag_args(schedule: str, start: date, owner_agency: str, owner_contact: str | None) -> dict:
    """What every interval-driven DAG (an extract, a direct exchange) is: a data-interval timetable, each run
    covering [previous tick, this tick) (Airflow 3's plain cron schedule gives zero-width intervals, which would
    move nothing), missed intervals caught up in order one at a time, and the owner's alert callbacks."""
    return {"schedule": CronDataIntervalTimetable(schedule, timezone="UTC"),
            "start_date": pendulum.datetime(start.year, start.month, start.day, tz="UTC"),
            "catchup": True, "max_active_runs": 1, "default_args": default_args(),
            **dag_callbacks(owner_agency, owner_contact)}


def build_extract_dag(source: SourceConfig) -> DAG:
    with DAG(
        dag_id=f"extract_{source.name}",
        description=f"Extract {source.name} ({source.owner_agency}) into {source.landing_schema}",
        tags=["extract", source.name, source.connection_model, *([f"agency:{agency_of(source)}"]
                                                                  if agency_of(source) else [])],
        **interval_dag_args(source.schedule, source.start_date, source.owner_agency, source.owner_contact),
        params={"full_refresh": Param(False, type="boolean",
                                      description="Extract everything up to the interval end, not just the interval"),
                "accept_row_drop": Param(False, type="boolean",
                                         description="Load even if rows fell more than row_count_drop allows")},
        doc_md=_doc(source),
    ) as dag:
        for table in source.tables:
            _table_task(source, table.name)
    return dag


def _source_dags(sources: list[SourceConfig]) -> dict[str, DAG]:
    dags = {}
    for source in sources:
        dags[f"extract_{source.name}"] = build_extract_dag(source)
        if source.compares_keys:
            dags[f"compare_{source.name}"] = build_compare_dag(source)
    return dags


def extract_dags(sources_dir: Path) -> dict[str, DAG]:
    """Every source file's DAGs by dag_id (``extract_<source>``, and ``compare_<source>`` for SQL sources);
    an invalid file raises a ConfigError naming file and field. (Airflow parses one agency at a time:
    :func:`agency_dags`.)"""
    return _source_dags(load_sources(sources_dir))


def agency_dags(dag_file: str | Path) -> dict[str, DAG]:
    """The DAGs of one owner agency's sources, for its DAG file ``<dags>/extract/<agency>.py``: it reads
    ``<dags>/sources/<agency>/*.yml`` and nothing else, so its parse costs the same at 5 sources or 3,000, and a
    broken source file breaks only its own agency's DAGs (the import error names the file and the field)."""
    path = Path(dag_file)
    folder = path.resolve().parent.parent / "sources" / path.stem
    if not folder.is_dir():
        raise ConfigError(f"{path}: the agency DAG file reads {folder}, which does not exist (the file's name is the "
                          "agency's folder under sources/; `ndc sources new <name> --agency <agency>` writes both)")
    return _source_dags(load_agency_sources(folder))
