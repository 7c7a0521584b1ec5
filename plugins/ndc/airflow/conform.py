"""The conform DAG: one ``dbt build``, one Airflow task per dbt model/seed for status, then write-audit-publish.

It runs on a time window (``NDC_CONFORM_SCHEDULE``, every 30 minutes by default), never once per landing: each
scheduled run reads from the ledger which sources loaded since the last publication and builds only what they feed
(none that feeds a shared model: the run is skipped). A manual run builds what every source feeds, or the
``sources`` param's. The DAG file does no per-source work, so its parse time does not grow with the number of
sources. ``prepare_build`` is the source-freshness gate (``ndc.conform.freshness``: a source past its error threshold,
or a
landing table gone, stops the run before anything builds and names it; the ``accept_stale`` param overrides the
threshold for one run; a source never loaded gets empty landing tables) and then picks the build schema consumers
are not reading. The ``dbt`` task group holds
``dbt.build``, which runs a single ``dbt build`` of the project into that schema (dbt var ``ndc_build_schema``) and
records each node's result in ``ndc_meta.conform_nodes`` as dbt reports it, and one task per model and seed, read
from the manifest that ``ndc dbt parse`` wrote (no dbt call at DAG parse time) and drawn with dbt's lineage. A
node task covers its model (or seed), its unit tests and the data tests whose last-built parent it is; it
**starts in the triggerer** (``start_from_trigger``) and ends there with the node's result, so it costs no worker
process: operators see each model's status as its own task while dbt builds the project in one process.
``publish`` runs only when ``dbt.build`` and every node task succeeded (it is downstream of each of them); it
switches every ``shared.<model>`` view to the new build in one transaction and emits the stable
``shared.<model>`` Assets. If any model or test fails, consumers keep the last good build.

Retrying: a node task that failed is retried (automatically, ``retries=1``, or by clearing it) on a worker with
``dbt build --select <node>`` into the same build schema; nodes that succeeded are not rebuilt. A node that dbt
skipped because an upstream node failed waits for that upstream task: rebuilt once it succeeds, skipped if it
fails for good. Then ``publish`` runs. ``dbt.build`` itself is never retried (it would rebuild everything).

``NDC_CONFORM_NODES`` chooses when node tasks start: ``concurrent`` (trigger rule ``always``: with the run, so they
follow dbt's results as they come; the lineage edges then only draw the graph; right for the scheduler) or
``after`` (downstream of ``dbt.build``, with ``all_success`` lineage; needed by ``airflow dags test``/``dag.test()``,
which run one task at a time). The default, ``auto``, is ``after`` inside ``airflow dags test``, else
``concurrent``. ``NDC_CONFORM_POLL_SECONDS`` (default 1) is how often the triggerer reads the results.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, BaseOperator, Param, TaskGroup, task

from ndc.airflow.callbacks import contract_alert, dag_callbacks
from ndc.airflow.factory import default_args, warehouse_uri
from ndc.conform import dbt
from ndc.conform.dbt_build import (
    PRODUCER,
    STATUS_TABLE,
    plan,
    record,
    run_dbt_build,
    verdict,
)

log = logging.getLogger(__name__)


def shared_asset(model: str) -> Asset:
    return Asset(name=f"shared.{model}", uri=warehouse_uri("shared", model), group="shared")


def nodes_mode() -> str:
    from ndc.settings import get_settings

    mode = get_settings().conform_nodes
    if mode == "auto":
        return "after" if sys.argv[1:3] == ["dags", "test"] else "concurrent"
    return mode


# --- the trigger (runs in the triggerer; ends the task itself, no worker) ----------------------------------------

try:
    from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent
except ImportError:  # pragma: no cover
    BaseTrigger = object  # type: ignore[assignment,misc]

_TERMINAL_BAD = {"failed", "upstream_failed", "skipped", "removed"}


class DbtNodeTrigger(BaseTrigger):
    """Polls ``ndc_meta.conform_nodes`` for the run until the node's results are final.

    Ends the task itself: success when the node and its tests passed; failed when one of them failed (the first
    time: a retry or a clear rebuilds the node on a worker); when dbt skipped the node because an upstream node
    failed, it waits for the upstream node tasks (which may be retried) and then rebuilds it, or skips."""

    _cache: dict[str, tuple[float, dict]] = {}  # one query per run and poll for every trigger in the process
    _locks: dict[str, asyncio.Lock] = {}

    def __init__(self, key: str, covers: list[str], upstream_tasks: list[str] | None = None,
                 producer_task: str = "dbt.build", run_id: str | None = None, dag_id: str | None = None,
                 poll: float | None = None):
        from ndc.settings import get_settings

        super().__init__()
        self.key, self.covers, self.upstream_tasks = key, list(covers), list(upstream_tasks or [])
        self.producer_task, self.run_id, self.dag_id = producer_task, run_id, dag_id
        self.poll = poll if poll is not None else get_settings().conform_poll.total_seconds()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{__name__}.DbtNodeTrigger",
                {"key": self.key, "covers": self.covers, "upstream_tasks": self.upstream_tasks,
                 "producer_task": self.producer_task, "run_id": self.run_id, "dag_id": self.dag_id,
                 "poll": self.poll})

    async def _statuses(self, run_id: str) -> dict[str, tuple[str, str | None]]:
        import psycopg

        from ndc.settings import get_settings

        lock = self._locks.setdefault(run_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(run_id)
            if cached and time.monotonic() - cached[0] < self.poll * 0.8:
                return cached[1]
            try:
                async with await psycopg.AsyncConnection.connect(get_settings().warehouse_url,
                                                                 autocommit=True) as conn:
                    cur = await conn.execute(f"select unique_id, status, message from {STATUS_TABLE}"
                                             " where run_id = %s", (run_id,))
                    found = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
            except psycopg.errors.UndefinedTable:
                found = {}
            self._cache[run_id] = (time.monotonic(), found)
            return found

    async def _mark_reported(self, run_id: str, message: str) -> None:
        import psycopg

        from ndc.settings import get_settings

        async with await psycopg.AsyncConnection.connect(get_settings().warehouse_url, autocommit=True) as conn:
            await conn.execute(f"insert into {STATUS_TABLE} (run_id, unique_id, status, message) values"
                               " (%s, %s, 'reported', %s) on conflict do nothing",
                               (run_id, f"reported:{self.key}", message))
        self._cache.pop(run_id, None)

    async def _task_states(self, dag_id: str, run_id: str, task_ids: list[str]) -> dict[str, str | None]:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=dag_id, task_ids=task_ids, run_ids=[run_id])
        return {t: (str(s) if s else None) for t, s in states.get(run_id, {}).items()}

    _producer_checked: dict[str, tuple[float, str | None]] = {}

    async def _producer_gone(self, dag_id: str, run_id: str) -> str | None:
        """dbt.build's state if it ended (e.g. upstream_failed, or skipped: nothing to conform) without starting
        dbt, else None; asked every 15 s per run."""
        checked = self._producer_checked.get(run_id)
        if checked and time.monotonic() - checked[0] < 15:
            return checked[1]
        self._producer_checked[run_id] = (time.monotonic(), None)
        state = (await self._task_states(dag_id, run_id, [self.producer_task])).get(self.producer_task)
        gone = state if state in _TERMINAL_BAD else None
        self._producer_checked[run_id] = (time.monotonic(), gone)
        return gone

    async def run(self):
        ti = getattr(self, "task_instance", None)
        run_id = self.run_id or ti.run_id
        dag_id = self.dag_id or ti.dag_id
        reported = f"reported:{self.key}"
        while True:
            statuses = await self._statuses(run_id)
            state, message = verdict(statuses, self.covers)
            if state == "success":
                self.log.info("%s: dbt build succeeded for %s", self.key, ", ".join(self.covers))
                yield TaskSuccessEvent()
                return
            if state == "failed" and reported in statuses:
                self.log.info("%s: %s; rebuilding it on a worker", self.key, message)
                yield TriggerEvent({"status": "rebuild", "message": message})
                return
            if state == "failed":
                await self._mark_reported(run_id, message)
                self.log.error("%s failed in dbt build: %s", self.key, message)
                yield TaskFailedEvent()
                return
            if state == "skipped":
                upstream = await self._task_states(dag_id, run_id, self.upstream_tasks)
                if all(upstream.get(t) == "success" for t in self.upstream_tasks):
                    self.log.info("%s: %s; upstream rebuilt, rebuilding it on a worker", self.key, message)
                    yield TriggerEvent({"status": "rebuild", "message": message})
                    return
                if any(upstream.get(t) in _TERMINAL_BAD for t in self.upstream_tasks):
                    self.log.warning("%s not built: upstream %s", self.key, upstream)
                    yield TaskSkippedEvent()
                    return
            elif statuses.get(PRODUCER, ("running",))[0] == "running" and (
                    gone := await self._producer_gone(dag_id, run_id)):
                if gone == "skipped":  # the run found nothing to conform
                    self.log.info("%s: %s was skipped: nothing to build", self.key, self.producer_task)
                    yield TaskSkippedEvent()
                    return
                self.log.error("%s: %s ended without reporting dbt's results", self.key, self.producer_task)
                yield TaskFailedEvent()
                return
            await asyncio.sleep(self.poll)


# --- operators ---------------------------------------------------------------------------------------------------

class DbtNodeOperator(BaseOperator):
    """One dbt model or seed (with its tests): its result in the run's ``dbt build``; a retry rebuilds it alone."""

    start_from_trigger = True
    ui_color = "#b9e3d0"

    def __init__(self, *, key: str, covers: list[str], select: str, upstream_tasks: list[str],
                 producer_task: str, **kwargs):
        super().__init__(**kwargs)
        self.key, self.covers, self.select = key, covers, select
        self.upstream_tasks, self.producer_task = upstream_tasks, producer_task
        from airflow.triggers.base import StartTriggerArgs

        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{__name__}.DbtNodeTrigger", next_method="execute_complete",
            trigger_kwargs={"key": key, "covers": covers, "upstream_tasks": upstream_tasks,
                            "producer_task": producer_task},
            next_kwargs=None, timeout=timedelta(hours=6))

    def execute(self, context):  # only without start_from_trigger (airflow dags test / dag.test())
        self.defer(trigger=DbtNodeTrigger(self.key, self.covers, self.upstream_tasks, self.producer_task,
                                          run_id=context["run_id"], dag_id=self.dag_id),
                   method_name="execute_complete", timeout=timedelta(hours=6))

    def execute_complete(self, context, event=None):
        from airflow.exceptions import AirflowException

        if event == "success" or (isinstance(event, dict) and event.get("status") == "success"):
            return None
        if event == "skipped":
            from airflow.exceptions import AirflowSkipException

            raise AirflowSkipException(f"{self.key}: not built, an upstream node failed")
        if not (isinstance(event, dict) and event.get("status") == "rebuild"):
            raise AirflowException(f"{self.key}: failed in dbt build (see ndc_meta.conform_nodes)")
        from ndc.conform.run_plan import RunPlan

        plan = RunPlan.from_dict(context["ti"].xcom_pull(task_ids="prepare_build"))
        self.log.info("rebuilding %s into %s (%s run %s): %s", self.select, plan.build_schema, plan.mode,
                      plan.conform_seq, event.get("message"))
        result = dbt.run(["build", "--select", self.select], dbt_vars=plan.dbt_vars())
        self.log.info("%s", result.output[-8000:])
        from ndc.settings import get_settings
        from ndc.warehouse import database

        with database.connect(get_settings().warehouse_url) as conn, conn.transaction():
            for uid in self.covers:
                record(conn, context["run_id"], uid, "success" if result.returncode == 0 else "error",
                       f"rebuilt by try {context['ti'].try_number}")
        if result.returncode != 0:
            raise AirflowException(f"dbt build --select {self.select} failed (exit {result.returncode})")
        return None


def _dbt_group(chosen, mode: str) -> tuple[TaskGroup, list]:
    nodes = plan()
    covered = {u for n in nodes.values() for u in n["covers"]}
    with TaskGroup(group_id="dbt", tooltip="one dbt build; a task per model/seed with its tests") as group:

        @task(task_id="build", retries=0)
        def build(plan: dict, run_id=None) -> dict:  # the run's plan: full or delta (ndc.conform.run_plan)
            return run_dbt_build(plan, run_id, covered)

        producer = build(chosen)
        # concurrent: every node task starts with the run (trigger rule "always") and follows dbt's results as
        # they come, the lineage edges only draw the graph; after: node tasks wait for dbt.build (dags test).
        rule = "always" if mode == "concurrent" else "all_success"
        tasks = {uid: DbtNodeOperator(
            task_id=n["name"], key=n["name"], covers=n["covers"], select=n["name"], trigger_rule=rule,
            upstream_tasks=[f"dbt.{nodes[p]['name']}" for p in n["upstream"]], producer_task=producer.operator.task_id,
            doc_md=f"`{uid}` and its tests: " + ", ".join(f"`{c}`" for c in n["covers"]))
            for uid, n in sorted(nodes.items())}
        for uid, n in nodes.items():
            for parent in n["upstream"]:
                tasks[parent] >> tasks[uid]
            if mode == "after":
                producer >> tasks[uid]
    return group, [producer, *tasks.values()]


def build_conform_dag() -> DAG:
    """The conform DAG. Its file does no per-source work: the schedule is a time window (``NDC_CONFORM_SCHEDULE``),
    and each run reads from the ledger which sources loaded since the last publication."""
    from airflow.timetables.trigger import CronTriggerTimetable

    from ndc.settings import get_settings
    models = sorted(dbt.shared_models())
    with DAG(
        dag_id="conform",
        description="freshness gate and plan, one dbt build (a task per model) of a full build or of the delta of"
                    " what changed, then publish (view switch or one-transaction apply)",
        # runs are grouped by time window: every landing since the last publication goes into the next run
        schedule=CronTriggerTimetable(get_settings().conform_schedule, timezone="UTC"),
        start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={**default_args(), "retries": 1},
        params={"accept_stale": Param(False, type="boolean",
                                      description="Build even if a source is past its freshness error threshold"),
                "full_refresh": Param(False, type="boolean",
                                      description="Rebuild every model from scratch (dbt --full-refresh) and publish"
                                      " by a view switch, instead of the delta of what changed"),
                "sources": Param(None, type=["null", "array"], items={"type": "string"},
                                 description="Build what these sources feed (a manual run without it: every source;"
                                 " a scheduled run: the sources loaded since the last publication)"),
                "changed_only": Param(False, type="boolean",
                                      description="Do what a scheduled run does: build what the sources loaded since"
                                      " the last publication feed, and skip the run if none does"),
                "accept_row_change": Param(False, type="boolean",
                                           description="Publish even if a shared model's row count changed more "
                                           "than NDC_PUBLISH_MAX_ROW_CHANGE allows (gate 2)")},
        tags=["conform", "dbt", "publish"],
        **dag_callbacks(),
        doc_md=__doc__,
    ) as dag:

        # a stale source alerts here (stale_source), once: the gate is not retried
        @task(retries=0, on_failure_callback=[contract_alert()])
        def prepare_build(params=None, ti=None, run_id=None, dag_run=None) -> dict:
            from airflow.exceptions import AirflowSkipException

            from ndc.audit import alerts
            from ndc.conform.run_plan import NothingToConform
            from ndc.settings import get_settings
            from ndc.tasks import conform_sources, prepare_conform
            from ndc.warehouse import database

            params = params or {}
            scheduled = str(getattr(dag_run, "run_type", "")).lower().endswith("scheduled")
            sources, why = conform_sources(params.get("sources"),
                                           scheduled=scheduled or bool(params.get("changed_only")))
            log.info("sources: %s (%s)", "every source" if sources is None else ", ".join(sources) or "none", why)
            try:
                prepared = prepare_conform(accept_stale=bool(params.get("accept_stale")), run_id=run_id,
                                           sources=sources, full_refresh=bool(params.get("full_refresh")))
            except NothingToConform as exc:
                raise AirflowSkipException(f"{exc} ({why})") from None
            plan = prepared["plan"]
            log.info("source freshness: %s", prepared["freshness"])
            log.info("conform run %s: %s build (%s) into %s; shared models %s", plan["conform_seq"], plan["mode"],
                     plan["reason"], plan["build_schema"], ", ".join(plan["models"]))
            with database.connect(get_settings().warehouse_url) as conn:
                alerts.close_alerts(conn, alerts.STALE_DATASET, run_id)  # fresh again (or accepted)
            with database.connect(get_settings().warehouse_url) as conn, conn.transaction():
                database.ensure_meta(conn)
                conn.execute(f"delete from {STATUS_TABLE} where updated_at < now() - interval '30 days'")
            ti.xcom_push(key="started_at", value=prepared["started_at"])  # gate 2 reconciles as of then
            return plan

        @task(outlets=[shared_asset(m) for m in models], on_failure_callback=[contract_alert("shared")])
        def publish(plan: dict, run_id=None, params=None, ti=None) -> dict:
            from ndc.tasks import publish_build

            started_at = ti.xcom_pull(task_ids="prepare_build", key="started_at")
            return publish_build(plan, run_id=run_id, as_of=started_at,
                                 accept_row_change=bool((params or {}).get("accept_row_change")))

        chosen = prepare_build()
        group, gated = _dbt_group(chosen, nodes_mode())
        published = publish(chosen)
        chosen >> group
        gated >> published  # publish waits for dbt.build and every node task, not only the group's leaves
    return dag
