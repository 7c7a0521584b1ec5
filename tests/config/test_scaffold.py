"""`ndc sources new`: a new national database is a YAML file and a contract in the DAG bundle (plus, in a checkout,
a simulator and its test) — the scaffold works as written, end to end (validate, simulate into PostgreSQL, extract
with its defects quarantined), and from an installed package it writes only into the project it runs in."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ndc.config.scaffold import source_files, write_files
from ndc.contracts import contracts
from ndc.errors import ConfigError
from ndc.tasks import extract_table
from tests.helpers import REPO
from tests.helpers.database import query

NAME = "zz_scaffold_probe"
AGENCY = "bo_thu_nghiem"  # the folder `--owner "Bộ Thử nghiệm"` names
# What `ndc sources new` writes in this checkout: the platform's three files (the source in its agency's folder, its
# contract, the new agency's DAG file), then the tooling's two.
WRITTEN = [REPO / "dags" / "sources" / AGENCY / f"{NAME}.yml", REPO / "dags" / "contracts" / f"{NAME}.py",
           REPO / "dags" / "extract" / f"{AGENCY}.py",
           REPO / "plugins" / "ndc_lab" / "simulate" / f"{NAME}.py",
           REPO / "tests" / "lab" / "simulate" / f"test_{NAME}.py"]
# Settings that would move the DAG bundle away from the checkout.
BUNDLE_SETTINGS = ("NDC_DAGS_DIR", "NDC_SOURCES_DIR", "NDC_EXCHANGES_DIR", "NDC_AGENCIES_DIR", "NDC_AGREEMENTS_DIR")


def _remove(paths: list[Path], folders: list[Path]) -> None:
    """The files, their compiled bytecode, and the folders the scaffold made (when left empty)."""
    for path in paths:
        path.unlink(missing_ok=True)
        for compiled in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            compiled.unlink()
    for folder in folders:
        cache = folder / "__pycache__"
        if cache.is_dir() and not any(cache.iterdir()):
            cache.rmdir()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@pytest.fixture
def scaffolded():
    """`ndc sources new` in this checkout; every file it writes is removed afterwards, also when it fails."""
    made_folders = [p.parent for p in WRITTEN if not p.parent.exists()]
    env = {k: v for k, v in os.environ.items() if k not in BUNDLE_SETTINGS}
    contracts.cache_clear()
    try:
        yield subprocess.run(["ndc", "sources", "new", NAME, "--owner", "Bộ Thử nghiệm"], env=env,
                             capture_output=True, text=True, check=False)
    finally:
        _remove(WRITTEN, made_folders)
        contracts.cache_clear()


def test_scaffold_validates_simulates_and_loads(dbs, scaffolded):
    assert scaffolded.returncode == 0, scaffolded.stderr
    assert [line.removeprefix("created ") for line in scaffolded.stdout.splitlines()[:-1]] == [str(p) for p in WRITTEN]
    assert f"ndc simulate {NAME}" in scaffolded.stdout.splitlines()[-1]
    out = subprocess.run(["ndc", "sources", "validate"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert f"{NAME}.yml: ok" in out.stdout
    source_url = dbs.warehouse.rsplit("/", 1)[0] + f"/ndc_test_scaffold_{dbs.run}"
    env = {**os.environ, f"AIRFLOW_CONN_NDC_SRC_{NAME.upper()}": source_url}
    sim = subprocess.run(["ndc", "simulate", NAME, "--citizens", "5000", "--defect-rate", "0.01"], env=env,
                         capture_output=True, text=True, check=False)
    assert sim.returncode == 0, sim.stderr
    assert "defect records.blank_name: 1 -> quarantined" in sim.stdout
    os.environ[f"AIRFLOW_CONN_NDC_SRC_{NAME.upper()}"] = source_url
    try:
        result = extract_table(NAME, "records", datetime(2024, 7, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    finally:
        os.environ.pop(f"AIRFLOW_CONN_NDC_SRC_{NAME.upper()}")
        from ndc.warehouse.database import drop_database

        drop_database(source_url)
    assert result.rows_in == 50 and result.rows_quarantined == 1 and result.rows_loaded == 49
    assert query(dbs.warehouse, "select checks from quarantine.rows where dataset = %s",
                 (f"{NAME}.records",)) == [(["name_not_blank"],)]


def test_scaffold_refuses_an_existing_file_and_a_bad_name(tmp_path):
    (tmp_path / "sources" / "x").mkdir(parents=True)
    (tmp_path / "sources" / "x" / "population.yml").write_text("taken\n")
    with pytest.raises(ConfigError, match=r"source 'population' already exists \(nothing written\): .*x/population"):
        source_files("population", "postgresql", "Bộ Khác", tmp_path)  # the same name in another agency's folder
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "other.py").write_text("taken\n")
    with pytest.raises(ConfigError, match=r"already exist \(nothing written\): .*other\.py"):
        write_files(source_files("other", "postgresql", "Bộ Mới", tmp_path))
    assert not (tmp_path / "sources" / "bo_moi").exists() and not (tmp_path / "extract").exists(), \
        "nothing is written when one file exists"
    with pytest.raises(ConfigError, match="agency 'Bad Agency'"):
        source_files("fine", "postgresql", "x", tmp_path, agency="Bad Agency")
    for bad in ("Bad Name", "shared"):
        with pytest.raises(ConfigError, match="lower-case identifier"):
            source_files(bad, "postgresql", "x", tmp_path)
    with pytest.raises(ConfigError, match="engine 'oracle'"):
        source_files("fine", "oracle", "x", tmp_path)


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sources_new_from_an_installed_package_writes_only_into_the_project(tmp_path):
    """The platform copied alone (no ndc_lab beside it) into a site folder, run from a project folder: the new
    source and its contract land in the project's dags/ and validate there; the package is left as it was."""
    site, project = tmp_path / "site", tmp_path / "project"
    shutil.copytree(REPO / "plugins" / "ndc", site / "ndc", ignore=shutil.ignore_patterns("__pycache__"))
    project.mkdir()
    before = _tree(site)
    # The venv also puts the checkout's plugins/ on sys.path (after PYTHONPATH): the copy must be what is imported.
    env = {**{k: v for k, v in os.environ.items() if k not in BUNDLE_SETTINGS and k != "NDC_DBT_PROJECT_DIR"},
           "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}

    def ndc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ndc.cli", *args], cwd=project, env=env, capture_output=True,
                              text=True, check=False, timeout=300)

    imported = subprocess.run([sys.executable, "-c", "import ndc.cli, ndc.settings as s; print(ndc.cli.__file__);"
                               " print(s.checkout_root())"], cwd=project, env=env, capture_output=True, text=True,
                              check=True)
    assert imported.stdout.split() == [str(site / "ndc" / "cli" / "__init__.py"), "None"]

    made = ndc("sources", "new", NAME, "--engine", "mysql", "--owner", "Bộ Thử nghiệm")
    assert made.returncode == 0, made.stderr
    written = [project / "dags" / "sources" / AGENCY / f"{NAME}.yml", project / "dags" / "contracts" / f"{NAME}.py",
               project / "dags" / "extract" / f"{AGENCY}.py"]
    assert [line.removeprefix("created ") for line in made.stdout.splitlines()[:-1]] == [str(p) for p in written]
    assert "ndc simulate" not in made.stdout
    assert sorted(p for p in project.rglob("*") if p.is_file()) == sorted(written)

    valid = ndc("sources", "validate")
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.strip().splitlines()[0] == f"{written[0]}: ok ({NAME}, 1 tables)"
    assert valid.stdout.strip().splitlines()[1].startswith("1 source files of 1 agencies valid in")
    assert _tree(site) == before, "nothing is written inside the installed package"
