"""Contract-failure alerts: first vs repeat of an open alert, the owner and runbook named, delivery to a webhook,
closed by the next successful run; attached to Airflow tasks as a final-failure notifier (never per retry)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from ndc_lab.simulate import population

from ndc.airflow.callbacks import ContractAlertNotifier, DagAlertNotifier
from ndc.conform.freshness import StaleSourceError
from ndc.errors import BatchBlockedError
from ndc.tasks import extract_table
from tests.helpers import REPO
from tests.helpers.database import query
from tests.helpers.webhook import webhook_server

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def webhook(monkeypatch):
    with webhook_server() as (url, received):
        monkeypatch.setenv("NDC_ALERT_WEBHOOK", url)
        yield received


def context(error: BaseException, run_id: str) -> dict:
    ti = SimpleNamespace(dag_id="extract_population", task_id="extract_citizens", run_id=run_id)
    return {"ti": ti, "exception": error, "run_id": run_id}


def test_first_then_repeat_then_closed_by_a_success(dbs, webhook):
    spec = population.PopulationSpec(citizens=500, seed=7, defect_rate=0.0)
    population.write(dbs.source, population.simulate(spec), spec)
    notifier = ContractAlertNotifier("population.citizens", "Ministry of Public Security",
                                     "Population data steward")
    error = BatchBlockedError("population.citizens: 10 rows against 500", dataset="population.citizens",
                              check="row_count_drop")
    notifier.notify(context(error, "run-1"))
    notifier.notify(context(error, "run-2"))
    first, repeat = webhook
    assert first["first"] is True and first["check"] == "row_count_drop"
    assert first["text"].startswith("[NDC] FIRST failure: population.citizens, check row_count_drop")
    for part in ("Ministry of Public Security", "Population data steward", "README.md#runbook-contract-failures",
                 "extract_population.extract_citizens run run-1"):
        assert part in first["text"]
    assert repeat["first"] is False and repeat["failures"] == 2 and "REPEAT failure #2" in repeat["text"]
    assert repeat["alert_id"] == first["alert_id"]
    # Another check of the same dataset is its own alert.
    notifier.notify(context(StaleSourceError("stale sources: population.citizens"), "run-3"))
    assert (webhook[2]["dataset"], webhook[2]["check"], webhook[2]["first"]) == (
        "conform.freshness", "stale_source", True)
    # Any other error is not the task's to alert on: the DAG run's failure callback raises one dag_failed alert,
    # unless a task of that run already alerted (run-1 did: no second call for one failure).
    notifier.notify(context(RuntimeError("connection refused"), "run-6"))
    assert len(webhook) == 3
    dag_notifier = DagAlertNotifier("Ministry of Public Security", "Population data steward")
    dag_context = {"dag": SimpleNamespace(dag_id="extract_population"), "reason": "task_failure"}
    dag_notifier.notify({**dag_context, "run_id": "run-1"})
    assert len(webhook) == 3
    dag_notifier.notify({**dag_context, "run_id": "run-6"})
    assert (webhook[3]["dataset"], webhook[3]["check"], webhook[3]["run_id"]) == (
        "dag:extract_population", "dag_failed", "run-6")
    assert "Ministry of Public Security" in webhook[3]["text"]
    # run-1 cleared and failed again, this time without a task's alert: alerted again (a repeat of the open one).
    dag_notifier.notify({**dag_context, "run_id": "run-1"})
    assert (webhook[4]["check"], webhook[4]["run_id"], webhook[4]["first"]) == ("dag_failed", "run-1", False)
    DagAlertNotifier(success=True).notify({**dag_context, "run_id": "run-7"})  # a later successful run closes it
    assert query(dbs.warehouse, "select closed_by_run_id from ndc_meta.alerts where check_name = 'dag_failed'") == [
        ("run-7",)]
    assert query(dbs.warehouse, "select count(*) from ndc_meta.alerts where closed_at is null"
                 " and dataset = 'population.citizens'")[0][0] == 1

    extract_table("population", "citizens", *EVERYTHING, run_id="run-4")
    assert query(dbs.warehouse, "select count(*), min(closed_by_run_id) from ndc_meta.alerts"
                 " where closed_at is not null and dataset = 'population.citizens'") == [(1, "run-4")]
    notifier.notify(context(error, "run-5"))
    assert (webhook[-1]["check"], webhook[-1]["first"]) == ("row_count_drop", True), \
        "after a success, the next failure is a first failure again"


def test_extract_and_publish_tasks_alert_on_final_failure_only(tmp_path):
    from ndc.airflow.conform import build_conform_dag
    from ndc.airflow.factory import extract_dags

    dags = extract_dags(REPO / "dags/sources")
    for dag in dags.values():
        if not dag.dag_id.startswith("extract_"):
            continue
        for task in dag.tasks:
            notifiers = [c for c in task.on_failure_callback or [] if isinstance(c, ContractAlertNotifier)]
            assert len(notifiers) == 1, f"{dag.dag_id}.{task.task_id}"
            source, table = dag.dag_id.removeprefix("extract_"), task.task_id.removeprefix("extract_")
            assert notifiers[0].dataset == f"{source}.{table}"
            assert notifiers[0].owner_contact, "the source file names who to contact"
            assert not task.on_retry_callback, "no alert per retry"
            assert task.retries >= 1
    conform = build_conform_dag()
    publish = conform.get_task("publish")
    assert any(isinstance(c, ContractAlertNotifier) for c in publish.on_failure_callback)
    assert any(isinstance(c, ContractAlertNotifier) for c in conform.get_task("prepare_build").on_failure_callback)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors and len(bag.dags) >= len(dags) + 4  # + conform, exchange, purge, reads
    for dag in bag.dags.values():  # every DAG run's failure alerts once, through the DAG's notifier
        assert [type(c) for c in dag.on_failure_callback] == [DagAlertNotifier], dag.dag_id
        assert [c.success for c in dag.on_success_callback] == [True], dag.dag_id


def test_a_webhook_that_is_not_an_http_url_is_logged_not_sent(monkeypatch, caplog):
    from ndc.audit.alerts import Alert, deliver

    monkeypatch.setenv("NDC_ALERT_WEBHOOK", "ftp://hooks.example/T0KEN")
    alert = Alert(alert_id=7, dataset="population.citizens", check="schema_drift", first=True, failures=1,
                  first_failed_at=datetime.now(UTC), owner_agency="Ministry", owner_contact=None, dag_id=None,
                  task_id=None, run_id="run-1", message="columns differ")
    deliver(alert)  # the alert is stored before delivery: a bad setting must not fail the failure callback
    assert "alert 7: environment variable NDC_ALERT_WEBHOOK='ftp://hooks.example/…'" in caplog.text
    assert "not sent" in caplog.text and "T0KEN" not in caplog.text
