"""The Airflow side of alerts: notifiers attached as ``on_failure_callback`` / ``on_success_callback``.

Airflow calls a task's failure notifier once, when the task has failed after its last retry (retries call
``on_retry_callback``, which carries no alert), and a DAG's when the run has failed, so an operator gets one alert
per failure, told apart as first or repeat (:mod:`ndc.audit.alerts`): the task's, for a contract failure or a stale
source; otherwise the DAG run's. A successful run closes its DAG's open ``dag_failed`` alert (a successful load or
publish closes its dataset's). Imports of the library happen when the callback runs.
"""

from __future__ import annotations

from airflow.sdk.bases.notifier import BaseNotifier


class ContractAlertNotifier(BaseNotifier):
    """Raise (or repeat) the alert of a task's final failure: dataset, check, owner to contact, runbook."""

    template_fields = ()

    def __init__(self, dataset: str | None = None, owner_agency: str | None = None,
                 owner_contact: str | None = None) -> None:
        super().__init__()
        self.dataset, self.owner_agency, self.owner_contact = dataset, owner_agency, owner_contact

    def notify(self, context) -> None:
        from ndc.audit import alerts
        from ndc.settings import get_settings
        from ndc.warehouse import database

        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(ti, "dag_id", None)
        task_id = getattr(ti, "task_id", None)
        classified = alerts.classify(context.get("exception"), self.dataset or f"{dag_id}.{task_id}")
        if classified is None:  # not a contract failure: the DAG run's failure callback alerts on it
            return
        dataset, check, message = classified
        owner = self.owner_agency or alerts.PLATFORM_OWNER
        with database.connect(get_settings().warehouse_url) as conn:
            database.ensure_meta(conn)
            alerts.raise_alert(conn, dataset=dataset, check=check, message=message, owner_agency=owner,
                               owner_contact=self.owner_contact, dag_id=dag_id, task_id=task_id,
                               run_id=getattr(ti, "run_id", None) or context.get("run_id"))


def contract_alert(dataset: str | None = None, owner_agency: str | None = None,
                   owner_contact: str | None = None) -> ContractAlertNotifier:
    return ContractAlertNotifier(dataset, owner_agency, owner_contact)


class DagAlertNotifier(BaseNotifier):
    """A DAG run's outcome: on failure, the ``dag_failed`` alert (unless a task of the run already alerted); on
    success, close the DAG's open ``dag_failed`` alert."""

    template_fields = ()

    def __init__(self, owner_agency: str | None = None, owner_contact: str | None = None, *,
                 success: bool = False) -> None:
        super().__init__()
        self.owner_agency, self.owner_contact, self.success = owner_agency, owner_contact, success

    def notify(self, context) -> None:
        from ndc.audit import alerts
        from ndc.settings import get_settings
        from ndc.warehouse import database

        dag = context.get("dag")
        dag_id = getattr(dag, "dag_id", None) or getattr(context.get("ti"), "dag_id", None)
        run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
        with database.connect(get_settings().warehouse_url) as conn:
            database.ensure_meta(conn)
            if self.success:
                alerts.close_alerts(conn, f"dag:{dag_id}", run_id)
                return
            ti = context.get("ti")
            last = f"; last task {ti.task_id}" if getattr(ti, "task_id", None) else ""
            reason = f"DAG run failed ({context.get('reason') or 'failed'}{last}); see the run's failed tasks' logs"
            alerts.dag_failed(conn, dag_id=dag_id, run_id=run_id, reason=reason,
                              owner_agency=self.owner_agency or alerts.PLATFORM_OWNER,
                              owner_contact=self.owner_contact)


def dag_callbacks(owner_agency: str | None = None, owner_contact: str | None = None) -> dict:
    """The ``on_failure_callback`` / ``on_success_callback`` arguments every platform DAG takes."""
    return {"on_failure_callback": [DagAlertNotifier(owner_agency, owner_contact)],
            "on_success_callback": [DagAlertNotifier(owner_agency, owner_contact, success=True)]}
