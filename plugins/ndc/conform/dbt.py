"""Running the dbt project: its connection comes from NDC_WAREHOUSE_URL (as NDC_DBT_* variables for the
profile), tracking is off, and the manifest the conform DAG is rendered from is made by ``dbt parse``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ndc.errors import NdcError
from ndc.settings import REPO_ROOT, get_settings

PROJECT_DIR = Path(os.environ.get("NDC_DBT_PROJECT_DIR") or REPO_ROOT / "dbt_project")
MANIFEST = PROJECT_DIR / "target" / "manifest.json"
BUILD_SCHEMAS = ("shared_a", "shared_b")


def dbt_env(warehouse_url: str | None = None) -> dict[str, str]:
    """Environment for dbt: the profile's connection and no tracking."""
    parts = urlsplit(warehouse_url or get_settings().warehouse_url)
    return {
        "NDC_DBT_HOST": parts.hostname or "127.0.0.1",
        "NDC_DBT_PORT": str(parts.port or 5432),
        "NDC_DBT_USER": unquote(parts.username or "postgres"),
        "NDC_DBT_PASSWORD": unquote(parts.password or ""),
        "NDC_DBT_DBNAME": parts.path.lstrip("/") or "ndc",
        # Aggregations over millions of rows (province_statistics, identity) sort in memory, not on disk.
        "PGOPTIONS": "-c work_mem=128MB",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
    }


def dbt_executable() -> str:
    found = Path(sys.prefix) / "bin" / "dbt"
    return str(found) if found.exists() else (shutil.which("dbt") or "dbt")


@dataclass
class DbtRun:
    returncode: int
    output: str


def command(args: list[str], build_schema: str | None = None) -> list[str]:
    """``dbt <args>`` on the project; ``build_schema`` is where shared models are built."""
    line = [dbt_executable(), *args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR)]
    if build_schema:
        if build_schema not in BUILD_SCHEMAS:
            raise NdcError(f"build schema must be one of {BUILD_SCHEMAS}, got {build_schema!r}")
        line += ["--vars", json.dumps({"ndc_build_schema": build_schema})]
    return line


def run(args: list[str], *, build_schema: str | None = None, echo: bool = False) -> DbtRun:
    """Run ``dbt <args>`` on the project; ``build_schema`` is where shared models are built."""
    env = {**os.environ, **dbt_env()}
    result = subprocess.run(command(args, build_schema), env=env, capture_output=not echo, text=True,
                            check=False)
    return DbtRun(result.returncode, (result.stdout or "") + (result.stderr or ""))


def parse() -> Path:
    """Write target/manifest.json (what the conform DAG is rendered from; never done at DAG parse time)."""
    result = run(["parse"])
    if result.returncode != 0:
        raise NdcError(f"dbt parse failed:\n{result.output[-4000:]}")
    return MANIFEST


def _shared_nodes(manifest_path: Path) -> list[dict]:
    if not manifest_path.exists():
        raise NdcError(f"{manifest_path} is missing: run `ndc dbt parse` (CI and the images do) first")
    nodes = json.loads(manifest_path.read_text())["nodes"].values()
    return [n for n in nodes if n["resource_type"] == "model" and n["config"].get("schema") == "shared"]


def shared_models(manifest_path: Path = MANIFEST) -> dict[str, list[str]]:
    """Shared (published) relations and their contract columns, in order, from the manifest. A relation is the
    model's alias: ``citizens``; a later version of a model is its own relation, ``citizens_v2``."""
    return {n["alias"]: list(n["columns"]) for n in _shared_nodes(manifest_path)}


def deprecations(manifest_path: Path = MANIFEST) -> dict[str, str]:
    """Shared relations with a deprecation date (dbt model versions' ``deprecation_date``), as ISO dates."""
    return {n["alias"]: str(n["deprecation_date"])[:10] for n in _shared_nodes(manifest_path)
            if n.get("deprecation_date")}
