"""The layers of docs/architecture.md hold: the core knows no Airflow and never imports the tooling beside it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from tests.helpers import REPO

PACKAGE = REPO / "plugins" / "ndc"

# Imports every core module (all of ndc but ndc.airflow) in one fresh process; reports the first module after
# whose import an `airflow` or `ndc_lab` module was loaded.
PROBE = """
import importlib, json, pkgutil, sys
import ndc
found, modules = {}, []
for info in pkgutil.walk_packages(ndc.__path__, "ndc."):
    if info.name == "ndc.airflow" or info.name.startswith("ndc.airflow."):
        continue
    importlib.import_module(info.name)
    modules.append(info.name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("airflow", "ndc_lab"))
    if loaded:
        found[info.name] = loaded[:5]
        break
print(json.dumps({"modules": modules, "found": found}))
"""


def test_no_core_module_loads_airflow_or_the_tooling():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["found"] == {}, f"a core module pulled in Airflow or ndc_lab: {report['found']}"
    # the probe really walked the core: every concern package is among what it imported
    for concern in ("config", "warehouse", "contracts", "extract", "landing", "conform", "sharing", "audit",
                    "operator", "cli"):
        assert f"ndc.{concern}" in report["modules"]
    assert len(report["modules"]) >= 50


def _imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_airflow_layer_imports_airflow_and_nothing_imports_the_tooling():
    """Static: no import statement anywhere in the platform names ndc_lab, and only ndc.airflow names airflow
    (the CLI finds the tooling's commands by module name at run time, and only when asked)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for module in _imported_modules(path):
            top = module.split(".")[0]
            if top == "ndc_lab" or (top == "airflow" and not relative.startswith("airflow/")):
                offenders.append(f"plugins/ndc/{relative}: imports {module}")
    assert offenders == []
