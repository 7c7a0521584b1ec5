"""Turn each validated exchange file into an Airflow 3 DAG of the direct distributed model.

One DAG per exchange (``exchange_<name>``), time-scheduled with ``catchup=True`` and ``max_active_runs=1`` like
the extracts, one task: :func:`ndc.sharing.exchange.run_exchange` over the run's data interval (also ``ndc exchange
run``).
The task returns counts only, so no row value reaches XCom; a final failure raises the contract alert.

Parsing touches no database and imports neither pandera nor polars: those load inside the task.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG, task

from ndc.airflow.callbacks import contract_alert
from ndc.airflow.factory import interval_dag_args
from ndc.config.exchanges import ExchangeConfig, load_exchanges
from ndc.warehouse.connections import env_name


def _doc(config: ExchangeConfig) -> str:
    p, c = config.provider, config.consumer
    where = f"`{p.schema_name}.{p.table}`" if p.engine == "postgresql" else f"`{p.table}`"
    return f"""### Direct exchange: {config.name}

{config.description}

| | |
|---|---|
| **provider** | {config.provider_agency} — {where} ({p.engine}, connection `{env_name(p.conn_id)}`) |
| **consumer** | {config.consumer_agency} — `{c.schema_name}.{c.table}` (PostgreSQL, `{env_name(c.conn_id)}`) |
| **purpose** | {config.purpose} |
| **legal basis** | {config.legal_basis} |
| **contract** | `{config.contract}` (gate 3: the same contract as the extract's gate 1) |
| **key / incremental** | {', '.join(p.primary_key)} / `{p.incremental_column}`, look-back {config.lookback} |

Each run moves the provider's rows of `[data_interval_start - look-back, data_interval_end)` that pass the
contract straight into the consumer's table, in one consumer transaction (the latest version per key wins; reruns
and backfills are idempotent). The hub keeps no payload: one `ndc_meta.ledger` row (`kind = exchange`), one
`ndc_meta.contract_results` row (`gate = exchange`) and, for rows not delivered, only key, failed checks and a
keyed hash in `ndc_meta.exchange_rejections`. The task returns counts only.

Rerun by hand: `ndc exchange run {config.name} --start <interval start> --end <interval end>`. Needs
`NDC_EXCHANGE_HASH_KEY`. Config: `{config.path}`.
"""


def _exchange_task(config: ExchangeConfig):
    path = str(config.path)

    @task(task_id="exchange",
          # one alert when the task has failed for good (not per retry); a later success closes it
          on_failure_callback=[contract_alert(config.dataset, config.provider_agency, config.owner_contact)])
    def exchange(data_interval_start=None, data_interval_end=None, run_id=None) -> dict:
        from dataclasses import asdict

        from ndc.config.exchanges import load_exchange
        from ndc.sharing.exchange import run_exchange

        return asdict(run_exchange(load_exchange(Path(path)), data_interval_start, data_interval_end,
                                   run_id=run_id))

    return exchange()


def build_exchange_dag(config: ExchangeConfig) -> DAG:
    with DAG(
        dag_id=f"exchange_{config.name}",
        description=f"{config.provider_agency} -> {config.consumer_agency}: {config.contract} (direct exchange)",
        tags=["exchange", config.name, "direct"],
        **interval_dag_args(config.schedule, config.start_date, config.provider_agency, config.owner_contact),
        doc_md=_doc(config),
    ) as dag:
        _exchange_task(config)
    return dag


def exchange_dags(exchanges_dir: Path) -> dict[str, DAG]:
    """Every exchange file's DAG by dag_id; an invalid file raises a ConfigError naming file and field."""
    return {f"exchange_{c.name}": build_exchange_dag(c) for c in load_exchanges(exchanges_dir)}
