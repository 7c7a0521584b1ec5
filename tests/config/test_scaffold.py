"""`ndc sources new`: a new national database is a YAML file, a contract and a simulator — the scaffold works as
written, end to end (validate, simulate into PostgreSQL, extract with its defects quarantined)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

import pytest

from ndc.config.scaffold import new_source
from ndc.contracts import contracts
from ndc.errors import ConfigError
from ndc.settings import REPO_ROOT
from ndc.tasks import extract_table
from tests.helpers.database import query

NAME = "zz_scaffold_probe"


@pytest.fixture
def scaffolded():
    made = new_source(NAME, "postgresql", "Bộ Thử nghiệm")
    contracts.cache_clear()
    try:
        yield made
    finally:
        for path in made.files:
            path.unlink(missing_ok=True)
        contracts.cache_clear()


def test_scaffold_validates_simulates_and_loads(dbs, scaffolded):
    assert [p.name for p in scaffolded.files] == [f"{NAME}.yml", f"{NAME}.py", f"{NAME}.py",
                                                  f"test_simulate_{NAME}.py"]
    out = subprocess.run(["ndc", "sources", "validate"], capture_output=True, text=True, check=False,
                         env={**os.environ})
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


def test_scaffold_refuses_an_existing_source_and_a_bad_name():
    with pytest.raises(ConfigError, match="already has files"):
        new_source("population", "postgresql", "x")
    with pytest.raises(ConfigError, match="lower-case identifier"):
        new_source("Bad Name", "postgresql", "x")
    assert not (REPO_ROOT / "dags" / "sources" / "Bad Name.yml").exists()
