"""The docker compose deployment: docker-compose.yml, Dockerfile, .env.example and the PostgreSQL init script.

No Docker engine runs here, so the file is checked as compose itself resolves it: Debian's ``docker-compose`` (1.29)
interpolates .env values, merges the YAML anchors and prints the resolved configuration, which the tests parse.
Without ``docker-compose`` the tests that need it skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
README = REPO / "README.md"
POSTGRES_INIT = REPO / "deploy" / "postgres-init"

# A ${VAR} compose interpolates from .env; $${VAR} is escaped (expanded later, inside the container).
_INTERPOLATED = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
_REQUIRED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):?\?")
_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_<>]*)=(.*)$")
# An exact image tag: major.minor.patch, optionally a suffix such as -python3.11; never a moving tag. PostgreSQL
# numbers its releases major.minor since version 10 (15.13 is one release), so its tag has two parts.
_EXACT_TAG = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/-]*):(?P<version>\d+\.\d+\.\d+)(?P<suffix>-[A-Za-z0-9._-]+)?$")
_EXACT_POSTGRES_TAG = re.compile(r"^(?P<name>postgres):(?P<version>1\d\.\d+)(?P<suffix>-[A-Za-z0-9._-]+)?$")
SERVICES = {"airflow-scheduler", "airflow-apiserver", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
            "redis", "postgres", "mariadb", "insurance-api", "airflow-init"}
AIRFLOW_COMPONENTS = {"airflow-scheduler", "airflow-apiserver", "airflow-dag-processor", "airflow-triggerer",
                      "airflow-worker", "airflow-init"}


def _compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        message = "docker-compose is not installed (apt-get install -y docker-compose)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _env_example() -> dict[str, str]:
    """Active assignments of .env.example (NAME=value lines, not the commented ``# NAME=`` ones)."""
    found = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line)
        if match and not match.group(1):
            found[match.group(2)] = match.group(3)
    return found


def _required() -> set[str]:
    return set(_REQUIRED.findall(COMPOSE.read_text(encoding="utf-8")))


def _interpolated() -> set[str]:
    return {a or b for a, b in _INTERPOLATED.findall(COMPOSE.read_text(encoding="utf-8"))}


def _run_compose(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    # compose prefers the process environment over --env-file: keep the deployment's variables out of it.
    names = set(_env_example()) | _interpolated()
    clean = {k: v for k, v in os.environ.items() if k not in names}
    return subprocess.run([_compose_binary(), "--env-file", str(env_file), "-f", str(COMPOSE), *args], cwd=REPO,
                          env=clean, capture_output=True, text=True, timeout=120, check=False)


def _filled_env() -> dict[str, str]:
    """.env.example with a distinct dummy value for every required secret."""
    env = _env_example()
    for name in _required():
        env[name] = f"dummy{name.lower().replace('_', '')}0123456789"
    return env


@cache
def _resolved_text() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = _run_compose(_filled_env(), Path(folder), "config")
    assert result.returncode == 0, result.stderr
    return result.stdout


def _resolved() -> dict:
    return yaml.safe_load(_resolved_text())


def _services() -> dict[str, dict]:
    return _resolved()["services"]


def test_config_is_valid_with_the_filled_env_example(tmp_path):
    result = _run_compose(_filled_env(), tmp_path, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert _required(), "the compose file names no required secret"


@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "NDC_DB_PASSWORD",
                                  "NDC_ANCHOR_DB_PASSWORD", "MARIADB_ROOT_PASSWORD", "NDC_MARIADB_PASSWORD",
                                  "NDC_INSURANCE_TOKEN", "NDC_EXCHANGE_HASH_KEY", "AIRFLOW_FERNET_KEY",
                                  "AIRFLOW_API_SECRET_KEY", "AIRFLOW_JWT_SECRET"])
def test_a_missing_secret_stops_compose_naming_it(tmp_path, name):
    assert name in _required(), f"{name} is not required (${{{name}:?...}}) in docker-compose.yml"
    env = _filled_env()
    del env[name]
    result = _run_compose(env, tmp_path, "config", "-q")
    assert result.returncode != 0
    assert f"set {name} in .env" in result.stderr, result.stderr
    env[name] = ""  # an empty value is missing too
    result = _run_compose(env, tmp_path, "config", "-q")
    assert result.returncode != 0
    assert f"set {name} in .env" in result.stderr, result.stderr


def test_env_example_holds_no_secret():
    env = _env_example()
    filled = {name: env[name] for name in _required() if env.get(name)}
    assert not filled, f"required secrets with a value in .env.example: {sorted(filled)}"


def test_secrets_do_not_leak_into_the_compose_file():
    text = COMPOSE.read_text(encoding="utf-8")
    # Every password in a URL comes from .env: user:${VAR}@ only.
    literal = re.findall(r"://[^:/@\s]*:(?!\$\{)[^@\s]+@", text)
    assert not literal, f"literal credentials in docker-compose.yml: {literal}"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _airflow_pin() -> str:
    for requirement in _pyproject()["project"]["dependencies"]:
        match = re.fullmatch(r"apache-airflow(\[[^\]]*\])?==(\S+)", requirement.strip())
        if match:
            return match.group(2)
    raise AssertionError("pyproject.toml pins no apache-airflow version")


def test_every_image_has_an_exact_version_tag():
    images = {name: service.get("image") for name, service in _services().items()}
    assert all(images.values()), f"services without an image: {[n for n, i in images.items() if not i]}"
    by_name = {}
    for name, image in images.items():
        match = _EXACT_TAG.match(image) or _EXACT_POSTGRES_TAG.match(image)
        assert match, f"service {name}: image {image!r} has no exact version tag"
        assert "latest" not in image
        by_name[match.group("name")] = image
    assert by_name["postgres"].startswith("postgres:15.")
    assert by_name["mariadb"].startswith("mariadb:10.11.")
    assert by_name["redis"].startswith("redis:7.2.")


def test_the_platform_image_is_built_from_the_pinned_airflow():
    pyproject = _pyproject()
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert froms == [f"apache/airflow:{_airflow_pin()}-python3.11"], froms
    assert "3.11" in pyproject["project"]["requires-python"]
    for base in froms:
        assert _EXACT_TAG.match(base), base
    platform = f"ndc-platform:{pyproject['project']['version']}"
    services = _services()
    for name in AIRFLOW_COMPONENTS | {"insurance-api", "flower"}:
        assert services[name]["image"] == platform, name
        assert Path(services[name]["build"]["context"]) == REPO, name


def test_the_dockerfile_installs_the_project_with_the_mysql_extra():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"apt-get install .*default-libmysqlclient-dev.*pkg-config", text)
    assert re.search(r"pip install --no-cache-dir .*-e \"\.\[mysql\]\"", text)
    for folder in ("dags/", "plugins/", "dbt_project/", "deploy/"):
        assert re.search(rf"^COPY .*\b{re.escape(folder)} ", text, flags=re.MULTILINE), folder
    assert "ndc dbt parse" in text  # the manifest the conform DAG is rendered from
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored


def _one_shot(services: dict[str, dict]) -> set[str]:
    """Services another service waits for to complete (they run once and exit)."""
    return {dependency for service in services.values()
            for dependency, rule in (service.get("depends_on") or {}).items()
            if rule.get("condition") == "service_completed_successfully"}


def test_every_long_running_service_has_a_healthcheck():
    services = _services()
    assert _one_shot(services) == {"airflow-init", "ndc-bootstrap"}
    assert services["airflow-init"].get("restart") == "no"
    missing = [name for name in services if name not in _one_shot(services) and not services[name].get("healthcheck")]
    assert not missing, f"services without a healthcheck: {missing}"


def _check(service: dict) -> str:
    return " ".join(service["healthcheck"]["test"])


def test_healthchecks_probe_the_right_thing():
    services = _services()
    assert "/api/v2/monitor/health" in _check(services["airflow-apiserver"])
    assert "localhost:8974/health" in _check(services["airflow-scheduler"])
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert "--job-type DagProcessorJob --local" in _check(services["airflow-dag-processor"])
    assert "--job-type TriggererJob --local" in _check(services["airflow-triggerer"])
    assert "inspect ping -d \"celery@$${HOSTNAME}\"" in _check(services["airflow-worker"])
    assert "pg_isready -h 127.0.0.1" in _check(services["postgres"])
    assert "healthcheck.sh --connect" in _check(services["mariadb"])
    assert "redis-cli ping" in _check(services["redis"])
    assert "/v1/employers/schema" in _check(services["insurance-api"])


def test_job_types_exist_in_the_installed_airflow():
    """The job types of the health checks are the ones `airflow jobs check --job-type` accepts in this Airflow."""
    import importlib.util

    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations
    cli_config = Path(next(iter(spec.submodule_search_locations))) / "cli" / "cli_config.py"
    source = cli_config.read_text(encoding="utf-8")
    block = re.search(r'ARG_JOB_TYPE_FILTER = Arg\(.*?choices=\(([^)]*)\)', source, flags=re.DOTALL)
    assert block, "airflow's cli_config.py has no job-type choices"
    choices = set(re.findall(r'"(\w+)"', block.group(1)))
    used = set(re.findall(r"--job-type (\w+)", COMPOSE.read_text(encoding="utf-8")))
    assert used == {"DagProcessorJob", "TriggererJob"}
    assert used <= choices, f"unknown job types {used - choices}; airflow has {choices}"


def test_every_compose_variable_is_named_in_env_example():
    names = _env_example()
    missing = sorted(_interpolated() - set(names))
    assert not missing, f"variables of docker-compose.yml missing from .env.example: {missing}"


def _readme_settings() -> set[str]:
    """The variables of the README's `## Settings` table (first column)."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Settings\n(.*?)(?=^## )", text, flags=re.DOTALL | re.MULTILINE)
    assert section, "README.md has no ## Settings section"
    names = set()
    for line in section.group(1).splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_<>]*)`", line.split("|")[1]))
    return names


def test_every_ndc_setting_of_the_readme_is_in_env_example():
    settings = _readme_settings()
    assert {"NDC_WAREHOUSE_URL", "NDC_BATCH_BYTES", "NDC_EXCHANGE_HASH_KEY"} <= settings
    named = {m.group(2) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
             if (m := _ASSIGNMENT.match(line))}
    missing = sorted(s for s in settings if s.startswith("NDC_") and s not in named)
    assert not missing, f"NDC settings of the README missing from .env.example: {missing}"


def test_every_env_example_setting_has_a_comment():
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        if match:
            above = lines[number - 1] if number else ""
            assert above.startswith("# ") and not _ASSIGNMENT.match(above), f".env.example: {line!r} has no comment"


def test_the_worker_scales():
    worker = _services()["airflow-worker"]
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert not worker.get("ports"), worker.get("ports")
    assert worker["command"] in ("celery worker", ["celery", "worker"])


def test_the_services_exist():
    services = _services()
    assert set(services) >= SERVICES, sorted(SERVICES - set(services))
    assert services["flower"]["profiles"] == ["flower"]
    commands = {name: services[name]["command"] for name in AIRFLOW_COMPONENTS - {"airflow-init"}}
    assert commands == {"airflow-scheduler": "scheduler", "airflow-apiserver": "api-server",
                        "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                        "airflow-worker": "celery worker"}
    assert services["insurance-api"]["command"][:3] == ["ndc", "simulate", "serve-insurance"]
    assert services["airflow-apiserver"]["ports"][0].endswith(":8080:8080/tcp")


def test_airflow_components_share_one_configuration():
    services = _services()
    shared = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
              "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
              "NDC_WAREHOUSE_URL", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    for key in shared:
        values = {services[name]["environment"].get(key) for name in AIRFLOW_COMPONENTS}
        assert len(values) == 1 and None not in values, f"{key} differs between Airflow components: {values}"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:")
    filled = _filled_env()
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == filled["AIRFLOW_JWT_SECRET"]
    assert env["NDC_WAREHOUSE_URL"] == f"postgresql://ndc:{filled['NDC_DB_PASSWORD']}@postgres:5432/ndc"
    for source in ("POPULATION", "TAXATION", "ENTERPRISE", "INSURANCE", "EDUCATION"):
        assert env[f"AIRFLOW_CONN_NDC_SRC_{source}"], source


def test_components_wait_for_init_and_the_worker_for_the_api_server():
    services = _services()
    for name in AIRFLOW_COMPONENTS - {"airflow-init"} | {"insurance-api"}:
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name
    for name in ("postgres", "redis", "mariadb"):
        assert services["airflow-init"]["depends_on"][name] == {"condition": "service_healthy"}
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}


def test_postgres_preloads_pg_stat_statements_and_runs_the_init_script():
    postgres = _services()["postgres"]
    assert "shared_preload_libraries=pg_stat_statements" in postgres["command"]
    mounts = [volume.split(":") for volume in postgres["volumes"]]
    assert [str(POSTGRES_INIT), "/docker-entrypoint-initdb.d", "ro"] in mounts
    script = POSTGRES_INIT / "10-ndc.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    subprocess.run(["bash", "-n", str(REPO / "deploy" / "airflow-init.sh")], check=True)
    text = script.read_text(encoding="utf-8")
    for needed in ("create role ndc login nocreatedb nocreaterole", "create extension if not exists pg_stat_statements",
                   "ndc_ledger_anchor", "ndc_anchor_writer"):
        assert needed in text, needed
    assert "grant pg_" not in text, "the runtime role ndc gets no predefined role"


def test_only_the_bootstrap_holds_the_administrators_password():
    """The runtime role runs Airflow; the database administrator's password (CREATEROLE, the anchor, the evidence)
    is given to the one-off ndc-bootstrap service only, which every Airflow component waits for."""
    services = _services()
    filled = _filled_env()
    bootstrap = services["ndc-bootstrap"]
    assert bootstrap["command"] == ["ndc", "warehouse", "bootstrap"] and bootstrap["restart"] == "no"
    assert filled["POSTGRES_PASSWORD"] in bootstrap["environment"]["NDC_ADMIN_URL"]
    assert services["airflow-init"]["depends_on"]["ndc-bootstrap"] == {"condition": "service_completed_successfully"}
    for name, service in services.items():
        if name in ("ndc-bootstrap", "postgres"):
            continue
        environment = service.get("environment") or {}
        values = " ".join(str(v) for v in environment.values())
        assert filled["POSTGRES_PASSWORD"] not in values and "NDC_ADMIN_URL" not in environment, name


def test_named_volumes():
    resolved = _resolved()
    assert set(resolved["volumes"]) >= {"postgres-data", "mariadb-data", "education-drops", "airflow-logs"}
    services = resolved["services"]
    assert "postgres-data:/var/lib/postgresql/data:rw" in services["postgres"]["volumes"]
    assert "mariadb-data:/var/lib/mysql:rw" in services["mariadb"]["volumes"]
    for name in ("airflow-worker", "airflow-init"):
        assert "education-drops:/opt/airflow/drops/education:rw" in services[name]["volumes"]
    assert services["airflow-worker"]["environment"]["AIRFLOW_CONN_NDC_SRC_EDUCATION"] == \
        "file:///opt/airflow/drops/education"


def test_the_init_script_creates_the_anchor_table_as_the_platform_does():
    """The compose init script creates the ledger anchor as its own owner (the platform's role must not own it), so
    it repeats ndc.audit.anchor's DDL: every statement of that DDL must appear in it word for word."""
    from ndc.audit.anchor import ANCHOR_DDL

    script = " ".join((POSTGRES_INIT / "10-ndc.sh").read_text().split())
    statements = [" ".join(s.split()) for s in ANCHOR_DDL.split(";\n") if s.strip()]
    assert len(statements) >= 6
    missing = [s for s in statements if s not in script]
    assert not missing, f"deploy/postgres-init/10-ndc.sh lacks ndc.audit.anchor.ANCHOR_DDL's: {missing}"


def test_the_sharing_service_runs_as_its_own_login_never_the_platforms():
    services = _services()
    filled = _filled_env()
    service = services["ndc-service"]
    assert service["command"][:3] == ["ndc", "service", "serve"]
    assert "localhost:8710/health" in _check(service)
    assert service["ports"][0].endswith(":8710/tcp") or service["ports"][0].endswith(":8710")
    environment = service["environment"]
    assert environment["NDC_SERVICE_URL"].startswith(f"postgresql://ndc_service_api:{filled['NDC_SERVICE_DB_PASSWORD']}@")
    assert "NDC_WAREHOUSE_URL" not in environment
    assert filled["NDC_DB_PASSWORD"] not in " ".join(str(v) for v in environment.values())
    assert service["depends_on"]["ndc-bootstrap"] == {"condition": "service_completed_successfully"}
    # the bootstrap makes that login a member of ndc_service (its URL names the user only)
    assert services["ndc-bootstrap"]["environment"]["NDC_SERVICE_URL"] == "postgresql://ndc_service_api@postgres:5432/ndc"
    assert "ndc_service_api" in (REPO / "deploy/postgres-init/10-ndc.sh").read_text()
