"""Alerts with judgment: one open alert per dataset and check, told apart as first failure or repeat.

Three kinds, each raised once, when the failure is final (Airflow calls notifiers after the last retry, never per
retry):
- a **contract failure** (a :class:`~ndc.errors.ContractViolation`: drift, a blocked batch, a blocked publish),
  raised by the task that failed, with the dataset and check it names;
- a **stale source** (:class:`~ndc.conform.freshness.StaleSourceError`: the conform DAG's freshness gate stopped the
  build), dataset ``conform.freshness``, check ``stale_source``;
- a **DAG failure** (any other error), raised by the DAG run's failure callback, dataset ``dag:<dag_id>``, check
  ``dag_failed``, unless a task of the same attempt of the run already raised one of the above (one failure, one
  alert; a cleared run that fails again is alerted again). A run in which one task breaks a contract and another
  fails otherwise is alerted once, by the contract; the run's other failed tasks are in the Airflow UI.

It is stored in ``ndc_meta.alerts`` (open until a later run of the dataset succeeds), logged, and — when
``NDC_ALERT_WEBHOOK`` is set — POSTed there as JSON (chat or ticketing integration). The message names the dataset,
the check, whether this repeats an open alert (and since when), the source owner to contact and the runbook.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg

from ndc.errors import ConfigError, ContractViolation
from ndc.settings import get_settings

log = logging.getLogger(__name__)
RUNBOOK = "README.md#runbook-contract-failures"
PLATFORM_OWNER = "NDC platform team (conformance: dbt_project owners)"


@dataclass
class Alert:
    alert_id: int
    dataset: str
    check: str
    first: bool
    failures: int
    first_failed_at: datetime
    owner_agency: str
    owner_contact: str | None
    dag_id: str | None
    task_id: str | None
    run_id: str | None
    message: str

    @property
    def text(self) -> str:
        kind = "FIRST failure" if self.first else (
            f"REPEAT failure #{self.failures} of open alert {self.alert_id} (failing since "
            f"{self.first_failed_at.isoformat(timespec='minutes')})")
        contact = f"{self.owner_agency}" + (f" <{self.owner_contact}>" if self.owner_contact else "")
        where = (f"{self.dag_id}.{self.task_id} run {self.run_id}" if self.task_id else
                 f"DAG {self.dag_id} run {self.run_id}" if self.dag_id else f"run {self.run_id}")
        return (f"[NDC] {kind}: {self.dataset}, check {self.check} — {where}. Contact: {contact}. "
                f"Runbook: {RUNBOOK}. {self.message}")


STALE_DATASET, STALE_CHECK = "conform.freshness", "stale_source"
DAG_FAILED = "dag_failed"
DAG_RUN_TASK = "__dag_run__"  # alert_runs.task_id of a DAG run's failure covered by its task's alert


def classify(error: BaseException | str | None, default_dataset: str) -> tuple[str, str, str] | None:
    """(dataset, check, message) of a task's final error when it is a contract failure or a stale source; None
    for any other error, which the DAG run's failure callback alerts on (:func:`dag_failed`)."""
    from ndc.conform.freshness import StaleSourceError

    if isinstance(error, ContractViolation):  # its summary: no sample rows (alerts are stored and sent on)
        return error.dataset or default_dataset, error.check or "contract", error.summary
    if isinstance(error, StaleSourceError):
        return STALE_DATASET, STALE_CHECK, str(error)
    return None


def dag_failed(conn: psycopg.Connection, *, dag_id: str, run_id: str | None, reason: str, owner_agency: str,
               owner_contact: str | None = None) -> Alert | None:
    """The alert of a failed DAG run, unless one of its tasks already raised a contract or stale-source alert
    for this run (then that alert is the run's one alert and None is returned)."""
    with conn.transaction():
        # A task's alert of this attempt: raised after the run's previous failure was handled here (a cleared run
        # keeps its run_id, and its next failure is alerted again).
        already = conn.execute(
            "select a.alert_id, a.dataset, a.check_name from ndc_meta.alert_runs r join ndc_meta.alerts a using"
            " (alert_id) where r.dag_id = %s and r.run_id = %s and r.task_id is distinct from %s and r.raised_at >"
            " coalesce((select max(raised_at) from ndc_meta.alert_runs where dag_id = %s and run_id = %s and"
            " task_id = %s), '-infinity') order by r.raised_at limit 1",
            (dag_id, run_id, DAG_RUN_TASK, dag_id, run_id, DAG_RUN_TASK)).fetchone()
        if already:  # recorded, so that the run's one alert can be traced from the DAG run too
            conn.execute("insert into ndc_meta.alert_runs (alert_id, dag_id, task_id, run_id) values"
                         " (%s, %s, %s, %s)", (already[0], dag_id, DAG_RUN_TASK, run_id))
    if already:
        log.info("DAG %s run %s failed; already alerted as alert %s (%s, %s)", dag_id, run_id, *already)
        return None
    return raise_alert(conn, dataset=f"dag:{dag_id}", check=DAG_FAILED, message=reason, owner_agency=owner_agency,
                       owner_contact=owner_contact, dag_id=dag_id, run_id=run_id)


def raise_alert(conn: psycopg.Connection, *, dataset: str, check: str, message: str, owner_agency: str,
                owner_contact: str | None = None, dag_id: str | None = None, task_id: str | None = None,
                run_id: str | None = None) -> Alert:
    """Open an alert, or count a repeat of the open one for this dataset and check; then deliver it."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('ndc_alert:' || %s || ':' || %s))", (dataset, check))
        row = conn.execute(
            "update ndc_meta.alerts set failures = failures + 1, last_failed_at = clock_timestamp(),"
            " last_run_id = %s, message = %s where dataset = %s and check_name = %s and closed_at is null"
            " returning alert_id, failures, first_failed_at", (run_id, message[:8000], dataset, check)).fetchone()
        first = row is None
        if first:
            row = conn.execute(
                "insert into ndc_meta.alerts (dataset, check_name, dag_id, task_id, owner_agency, owner_contact,"
                " first_run_id, last_run_id, message) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " returning alert_id, failures, first_failed_at",
                (dataset, check, dag_id, task_id, owner_agency, owner_contact, run_id, run_id,
                 message[:8000])).fetchone()
        conn.execute("insert into ndc_meta.alert_runs (alert_id, dag_id, task_id, run_id) values (%s, %s, %s, %s)",
                     (row[0], dag_id, task_id or DAG_RUN_TASK, run_id))
    alert = Alert(alert_id=row[0], dataset=dataset, check=check, first=first, failures=row[1],
                  first_failed_at=row[2], owner_agency=owner_agency, owner_contact=owner_contact, dag_id=dag_id,
                  task_id=task_id, run_id=run_id, message=message)
    deliver(alert)
    return alert


def close_alerts(conn: psycopg.Connection, dataset: str, run_id: str | None) -> int:
    """A successful run of ``dataset`` closes its open alerts; returns how many."""
    with conn.transaction():
        return conn.execute("update ndc_meta.alerts set closed_at = clock_timestamp(), closed_by_run_id = %s"
                            " where dataset = %s and closed_at is null", (run_id, dataset)).rowcount


def deliver(alert: Alert) -> None:
    log.error("%s", alert.text)
    try:
        url = get_settings().alert_webhook
    except ConfigError as exc:  # the alert is stored and logged either way
        log.error("alert %s: %s; not sent", alert.alert_id, exc)
        return
    if not url:
        return
    body = json.dumps({**asdict(alert), "text": alert.text, "runbook": RUNBOOK}, default=str).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - an operator-set URL
            response.read()
    except OSError as exc:  # the alert is stored and logged either way
        where = urllib.parse.urlsplit(url)  # scheme and host only: webhook tokens live in paths and queries
        log.error("alert %s: webhook %s://%s failed: %s", alert.alert_id, where.scheme, where.hostname, exc)
