"""Maintenance DAGs of the platform itself (not per source): the retention purge of personal data.

Parsing touches no database and imports neither pandera nor polars: the work is imported inside the task.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from ndc.airflow.callbacks import dag_callbacks
from ndc.airflow.factory import default_args
from ndc.settings import DEFAULT_RETENTION_DAYS

PURGE_DAG_ID = "purge_personal_data"

PURGE_DOC = f"""### Purge personal data past its retention period

Quarantine and landing history hold personal data (Việt Nam's personal data protection rules): once a day this
deletes

- rows of `quarantine.rows` quarantined more than `NDC_RETENTION_DAYS` days ago (default
  {DEFAULT_RETENTION_DAYS}), replayed or not;
- versions in `landing_<source>.<table>_history` loaded before that cutoff that are **no longer the current
  version** of their key;
- versions of the residence snapshot `history.citizen_residence_history` superseded (`dbt_valid_to`) before that
  cutoff.

The current state of every key (`landing_<source>.<table>` and its version in history, each snapshot key's
latest version) is never purged, nor are the ledger, batches or contract results (counts only). Deletes run in
batches of 50,000 rows; one ledger row (`kind = purge`) records the cutoff and the rows purged per dataset and
snapshot — counts, never keys or payload — and a `retention_days` param under `details.overrides`.

By hand: `ndc purge --dry-run` shows what would go; `ndc purge [--retention-days N]` purges.
Trigger with `{{"dry_run": true}}` to count without deleting, or `{{"retention_days": N}}` to override the setting
once. See docs/quarantine.md.
"""


def build_purge_dag() -> DAG:
    """The daily purge (:func:`ndc.audit.retention.purge`, also ``ndc purge``)."""
    with DAG(
        dag_id=PURGE_DAG_ID,
        description="Delete quarantine rows, superseded landing history and residence snapshot versions"
                    " older than NDC_RETENTION_DAYS",
        schedule="@daily",
        start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
        catchup=False,  # each run purges everything past the cutoff: missed days need no run of their own
        max_active_runs=1,
        default_args=default_args(),
        tags=["maintenance", "personal-data"],
        **dag_callbacks(),
        params={"dry_run": Param(False, type="boolean", description="Count what would be purged; delete nothing"),
                "retention_days": Param(None, type=["null", "integer"], minimum=1,
                                        description="Override NDC_RETENTION_DAYS for this run")},
        doc_md=PURGE_DOC,
    ) as dag:
        @task(task_id="purge")
        def purge(run_id=None, params=None) -> dict:
            from dataclasses import asdict

            from ndc.audit.retention import purge as purge_personal_data

            params = params or {}
            result = purge_personal_data(retention_days=params.get("retention_days"),
                                         dry_run=bool(params.get("dry_run")), run_id=run_id)
            return {**asdict(result), "cutoff": result.cutoff.isoformat(), "total": result.total}

        purge()
    return dag


def build_reads_dag() -> DAG:
    """Hourly collection of consumer reads per role and view (:func:`ndc.sharing.reads.collect`, also ``ndc reads``)."""
    with DAG(
        dag_id="collect_consumer_reads",
        description="Count agency reads per login and view from the views' read meters (a sharing-transaction unit)",
        schedule="@hourly",
        start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
        catchup=False,  # each run takes the growth since the last one
        max_active_runs=1,
        default_args=default_args(),
        tags=["maintenance", "sharing"],
        **dag_callbacks(),
        doc_md="""### Collect consumer reads

Adds the statements each agency login ran on its views since the last run (counted by the views themselves, per
login and view, whatever the statement's text) to `ndc_meta.consumer_reads` (day, login, agency, view) and writes
one ledger row (`kind = reads`). `ndc_meta.sharing_transactions` counts them as the unit `read`. By hand:
`ndc reads collect`.
""",
    ) as dag:
        @task(task_id="collect")
        def collect(run_id=None) -> dict:
            from ndc.settings import get_settings
            from ndc.sharing.reads import collect as collect_reads
            from ndc.warehouse import database

            with database.connect(get_settings().warehouse_url) as conn:
                database.ensure_meta(conn)
                found = collect_reads(conn, run_id=run_id)
            return {"reads": found.reads}

        collect()
    return dag
