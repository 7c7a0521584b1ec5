"""The Airflow side of alerts: a notifier attached as ``on_failure_callback``.

Airflow calls it once, when a task has failed after its last retry (retries call ``on_retry_callback``, which
carries no alert), so an operator gets one alert per failure, told apart as first or repeat (:mod:`ndc.alerts`).
A success callback closes the dataset's open alerts. Imports of the library happen when the callback runs.
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
        from ndc import alerts, warehouse
        from ndc.settings import get_settings

        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(ti, "dag_id", None)
        task_id = getattr(ti, "task_id", None)
        dataset, check, message = alerts.classify(context.get("exception"), self.dataset or f"{dag_id}.{task_id}")
        owner = self.owner_agency or alerts.PLATFORM_OWNER
        with warehouse.connect(get_settings().warehouse_url) as conn:
            warehouse.ensure_meta(conn)
            alerts.raise_alert(conn, dataset=dataset, check=check, message=message, owner_agency=owner,
                               owner_contact=self.owner_contact, dag_id=dag_id, task_id=task_id,
                               run_id=getattr(ti, "run_id", None) or context.get("run_id"))


def contract_alert(dataset: str | None = None, owner_agency: str | None = None,
                   owner_contact: str | None = None) -> ContractAlertNotifier:
    return ContractAlertNotifier(dataset, owner_agency, owner_contact)

