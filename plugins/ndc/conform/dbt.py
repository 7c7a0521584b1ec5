"""Running the dbt project (``NDC_DBT_PROJECT_DIR``): its connection comes from NDC_WAREHOUSE_URL (as NDC_DBT_*
variables for the profile, see :func:`ndc.settings.dbt_environment`), tracking is off, and the manifest that the
conform DAG is drawn from is made by ``dbt parse``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ndc.errors import NdcError
from ndc.settings import dbt_environment, get_settings

BUILD_SCHEMAS = ("shared_a", "shared_b")


def project_dir() -> Path:
    return get_settings().dbt_project_dir


def manifest_file() -> Path:
    """``target/manifest.json`` of the project: what ``dbt parse`` writes and the conform DAG is drawn from."""
    return project_dir() / "target" / "manifest.json"


def dbt_executable() -> str:
    found = Path(sys.prefix) / "bin" / "dbt"
    return str(found) if found.exists() else (shutil.which("dbt") or "dbt")


@dataclass
class DbtRun:
    returncode: int
    output: str


def command(args: list[str], build_schema: str | None = None, dbt_vars: dict | None = None) -> list[str]:
    """``dbt <args>`` on the project; ``build_schema`` is where shared models are built (a full build);
    ``dbt_vars``: a conform run's vars (``ndc.conform.run_plan.RunPlan.dbt_vars``), which name it."""
    project = str(project_dir())
    line = [dbt_executable(), *args, "--project-dir", project, "--profiles-dir", project]
    given = dict(dbt_vars or {})
    if build_schema:
        given["ndc_build_schema"] = build_schema
    if given:
        if given.get("ndc_build_schema") not in BUILD_SCHEMAS:
            raise NdcError(f"build schema must be one of {BUILD_SCHEMAS}, got {given.get('ndc_build_schema')!r}")
        line += ["--vars", json.dumps(given)]
    return line


def run(args: list[str], *, build_schema: str | None = None, echo: bool = False,
        dbt_vars: dict | None = None) -> DbtRun:
    """Run ``dbt <args>`` on the project; ``build_schema`` is where shared models are built."""
    result = subprocess.run(command(args, build_schema, dbt_vars), env=dbt_environment(), capture_output=not echo,
                            text=True, check=False)
    return DbtRun(result.returncode, (result.stdout or "") + (result.stderr or ""))


def parse() -> Path:
    """Write target/manifest.json (what the conform DAG is rendered from; never done at DAG parse time)."""
    result = run(["parse"])
    if result.returncode != 0:
        raise NdcError(f"dbt parse failed:\n{result.output[-4000:]}")
    return manifest_file()


def _shared_nodes(manifest_path: Path | None) -> list[dict]:
    manifest_path = manifest_path or manifest_file()
    if not manifest_path.exists():
        raise NdcError(f"{manifest_path} is missing: run `ndc dbt parse` (CI and the images do) first")
    nodes = json.loads(manifest_path.read_text())["nodes"].values()
    return [n for n in nodes if n["resource_type"] == "model" and n["config"].get("schema") == "shared"]


def shared_models(manifest_path: Path | None = None) -> dict[str, list[str]]:
    """Shared (published) relations and their contract columns, in order, from the manifest. A relation is the
    model's alias: ``citizens``; a later version of a model is its own relation, ``citizens_v2``."""
    return {n["alias"]: list(n["columns"]) for n in _shared_nodes(manifest_path)}


def primary_keys(manifest_path: Path | None = None) -> dict[str, list[str]]:
    """Shared relations and the columns of their contract's primary key (none: the relation declares none)."""
    return {n["alias"]: next((list(c.get("columns") or []) for c in n.get("constraints") or []
                              if c.get("type") == "primary_key"), []) for n in _shared_nodes(manifest_path)}


def deprecations(manifest_path: Path | None = None) -> dict[str, str]:
    """Shared relations with a deprecation date (dbt model versions' ``deprecation_date``), as ISO dates."""
    return {n["alias"]: str(n["deprecation_date"])[:10] for n in _shared_nodes(manifest_path)
            if n.get("deprecation_date")}
