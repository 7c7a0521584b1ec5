"""Airflow's processes on one machine, started and stopped by the platform: the conform benchmark (LocalExecutor)
and the distributed path (CeleryExecutor: scheduler, API server, dag-processor, triggerer and Celery workers
against Redis and PostgreSQL), which the tests drive exactly as the docker-compose deployment runs it.

Each process runs in its own process group and logs to ``$AIRFLOW_HOME/<log_dir>/<name>.log``; :meth:`stop`
sends SIGTERM to each group, then SIGKILL (LocalExecutor workers and hung children ignore SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

from ndc.errors import NdcError
from ndc_lab.demo import airflow_command

LOCAL_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")


def say(message: str, what: str = "airflow") -> None:
    print(f"[{what} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def plain_url(url: str) -> str:
    """A SQLAlchemy URL of the metadata database as libpq takes it."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1).replace("postgresql+psycopg://",
                                                                           "postgresql://", 1)


def metadata_query(metadata_url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(plain_url(metadata_url), autocommit=True, connect_timeout=10) as conn:
        return conn.execute(statement, params).fetchall()


def jobs_running(metadata_url: str) -> set[str]:
    """Airflow job types with a heartbeat in the last 30 s (SchedulerJob, TriggererJob, DagProcessorJob)."""
    return {r[0] for r in metadata_query(metadata_url, "select job_type from job where state = 'running' and"
                                         " latest_heartbeat > now() - interval '30 seconds'")}


def session_members(sid: int) -> list[int]:
    """The processes of session ``sid`` (each started process leads a session of its own; Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    found.append(int(entry.name))
    return found


class Processes:
    """Airflow's long-running processes (``airflow <command…>``), each in its own process group."""

    def __init__(self, env: dict[str, str], log_dir: str = "process_logs"):
        self.env = {**os.environ, **env}
        self.logs = Path(env["AIRFLOW_HOME"]) / log_dir
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def cli(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(airflow_command(*args), env=self.env, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise NdcError(f"airflow {' '.join(args)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
        return result.stdout

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> None:
        """Start ``airflow <command or name>`` as ``name``, with ``env`` over the common environment."""
        handle = open(self.log(name), "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(airflow_command(*(command or (name,))), env={**self.env, **(env or {})},
                                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def stop(self) -> None:
        """SIGTERM to each process's group, then SIGKILL to everything left in its session: Airflow's task
        runners (and their dbt children) run in process groups of their own, inside the session we started."""
        for proc in self.procs.values():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            for pid in session_members(proc.pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            tails = {n: self.log(n).read_text(errors="replace")[-1500:] for n in dead if self.log(n).exists()}
            raise NdcError(f"airflow processes exited: {dead} (logs in {self.logs})\n"
                           + "\n".join(f"--- {n}:\n{t}" for n, t in tails.items()))

    def wait(self, what: str, check: Callable[[], object], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with suppress(Exception):
                if check():
                    return
            time.sleep(0.5)
        raise NdcError(f"timed out after {timeout:.0f} s waiting for {what} (logs in {self.logs})")


class Api:
    """The REST API with a JWT of the simple auth manager's admin (its generated password file)."""

    def __init__(self, port: int, home: Path):
        self.base = f"http://127.0.0.1:{port}"
        self.password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        self.token = self._request("POST", "/auth/token", {"username": "admin", "password": self.password},
                                   auth=False)["access_token"]

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, method=method, headers=headers,  # noqa: S310
                                         data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http://127.0.0.1 only
            return json.loads(response.read() or b"{}")

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        return self._request(method, path, body)


def wait_for_run(processes: Processes, metadata: str, dag_id: str, run_id: str, timeout: float,
                 what: str = "airflow") -> str:
    """Poll a DAG run until it ends; prints task states as they change. Returns the final state."""
    deadline, seen, started = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        processes.check_alive()
        rows = metadata_query(metadata, "select state from dag_run where dag_id = %s and run_id = %s",
                              (dag_id, run_id))
        if rows and rows[0][0] in ("success", "failed"):
            return rows[0][0]
        counts = metadata_query(metadata, "select coalesce(state, 'none'), count(*) from task_instance where"
                                " dag_id = %s and run_id = %s group by 1 order by 1", (dag_id, run_id))
        if counts != seen:
            say(f"  {time.monotonic() - started:5.1f} s {dag_id} {rows[0][0] if rows else None}: "
                + ", ".join(f"{s} {n}" for s, n in counts), what)
            seen = counts
        time.sleep(0.5)
    raise NdcError(f"{dag_id} run {run_id} did not end within {timeout:.0f} s (logs in {processes.logs})")


@contextmanager
def running_airflow(env: dict[str, str], port: int, dag_ids: tuple[str, ...] = ("conform",), *,
                    processes: dict[str, tuple[str, ...]] | None = None,
                    process_env: dict[str, dict[str, str]] | None = None,
                    what: str = "airflow") -> Iterator[tuple[Processes, Api]]:
    """Airflow's processes up (by default api-server, scheduler, dag-processor and triggerer; ``processes`` maps
    a name to its ``airflow`` arguments, e.g. ``{"worker": ("celery", "worker")}``), ``dag_ids`` serialized and
    unpaused; yields ``(processes, api)`` and stops every process afterwards."""
    metadata = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    airflow = Processes(env)
    chosen = processes or {name: (name,) for name in LOCAL_PROCESSES}
    try:
        say("starting " + ", ".join(chosen), what)
        started = time.monotonic()
        for name, command in chosen.items():
            airflow.start(name, *command, env=(process_env or {}).get(name))
        airflow.wait("the API server", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).status == 200, 180)
        expected = {"SchedulerJob", "TriggererJob", "DagProcessorJob"} & {
            {"scheduler": "SchedulerJob", "triggerer": "TriggererJob", "dag-processor": "DagProcessorJob"}.get(
                c[0], "") for c in chosen.values()}
        airflow.wait(", ".join(sorted(expected)) + " heartbeats", lambda: expected <= jobs_running(metadata), 180)
        for dag_id in dag_ids:
            airflow.wait(f"the serialized {dag_id} DAG", lambda d=dag_id: metadata_query(
                metadata, "select 1 from serialized_dag where dag_id = %s", (d,)), 120)
        errors = metadata_query(metadata, "select filename, stacktrace from import_error")
        if errors:
            raise NdcError(f"DAG import errors: {errors}")
        api = Api(port, Path(env["AIRFLOW_HOME"]))
        for dag_id in dag_ids:
            api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        say(f"airflow up and {', '.join(dag_ids)} unpaused in {time.monotonic() - started:.1f} s", what)
        yield airflow, api
    finally:
        say("stopping airflow", what)
        airflow.stop()


def worker_hostname() -> str:
    """``[core] hostname_callable`` for a worker that must be told apart on one machine (the Celery test): the
    name in ``NDC_WORKER_HOSTNAME``, else the machine's name as Airflow's default gives it."""
    import socket

    return os.environ.get("NDC_WORKER_HOSTNAME") or socket.getfqdn()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop_queue(broker_url: str, queue: str) -> None:
    """Remove a test's or fault scenario's Celery queue from a shared Redis broker: the queue, its bindings, and
    what a killed worker held unacknowledged (kombu keeps those in the database-wide ``unacked`` hash as
    ``[message, exchange, routing key]``; another worker would restore them to the queue after the visibility
    timeout). Best effort: a broker that is gone has nothing left to clean."""
    import redis

    with suppress(Exception):
        broker = redis.Redis.from_url(broker_url, socket_connect_timeout=3)
        broker.delete(queue, *broker.keys(f"_kombu.binding.{queue}*"),
                      *broker.keys(f"_kombu.binding_permanent.{queue}*"))
        for tag, raw in broker.hgetall("unacked").items():
            with suppress(ValueError, TypeError, IndexError, KeyError):
                if json.loads(raw)[2] == queue:
                    broker.hdel("unacked", tag)
                    broker.zrem("unacked_index", tag)
