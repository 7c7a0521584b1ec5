"""Source files: valid ones load; each kind of mistake is reported with the file, the field and what to do."""

from __future__ import annotations

import subprocess
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from ndc.config.sources import agency_of, load_source, load_sources
from ndc.errors import ConfigError
from tests.helpers import REPO

GOOD = """
name: {name}
description: test source
owner_agency: Test Agency
connection_model: centralised
connection: {{conn_id: ndc_src_{name}, engine: postgresql}}
schedule: "@daily"
start_date: 2024-07-01
lookback: PT2H
tables:
  - {{name: citizens, source_table: citizens, primary_key: [pin], incremental_column: updated_at,
     contract: population.citizens}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_repository_sources_are_valid():
    sources = {s.name: s for s in load_sources(REPO / "dags" / "sources")}
    assert sorted(sources) == ["education", "enterprise", "insurance", "population", "taxation"]
    assert {n: agency_of(s) for n, s in sources.items()} == {
        "education": "education", "enterprise": "finance", "insurance": "social_insurance",
        "population": "public_security", "taxation": "finance"}, "each in its owner agency's folder"
    assert all((REPO / "dags" / "extract" / f"{agency_of(s)}.py").is_file() for s in sources.values())
    population = sources["population"]
    assert population.lookback == timedelta(hours=2)
    assert population.landing_schema == "landing_population"
    assert [t.name for t in population.tables] == ["citizens", "households", "residence_changes"]


@pytest.mark.parametrize(("change", "field", "expected"), [
    (("connection_model: centralised", "connection_model: hybrid"), "connection_model", "'centralised' or 'direct'"),
    (("engine: postgresql", "engine: oracle"), "connection.engine", "'postgresql'"),
    (("source_table: citizens", "source_table: citizens; drop table x"), "tables.0.source_table",
     "lower-case SQL identifier"),
    (("primary_key: [pin]", "primary_key: []"), "tables.0.primary_key", "at least 1 item"),
    (('schedule: "@daily"', 'schedule: "every day"'), "schedule", "cron expression"),
    (("lookback: PT2H", "lookback: -PT2H"), "lookback", "zero or more"),
    (("start_date: 2024-07-01", "start_date: 2024-13-01"), "start_date", "date"),
    (("owner_agency: Test Agency\n", ""), "owner_agency", "Field required"),
    (("lookback: PT2H", "lookback: PT2H\nretries: 3"), "retries", "Extra inputs are not permitted"),
])
def test_invalid_field_is_named(tmp_path, change, field, expected):
    old, new = change
    text = GOOD.format(name="demo")
    assert old in text
    path = write(tmp_path, "demo", text.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_source(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"field '{field}'" in message
    assert expected in message


def test_name_must_match_file(tmp_path):
    path = write(tmp_path, "other", GOOD.format(name="demo"))
    with pytest.raises(ConfigError, match=r"other\.yml: field 'name': 'demo' must match the file name 'other'"):
        load_source(path)


def test_yaml_syntax_error_names_file(tmp_path):
    path = write(tmp_path, "demo", "name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"demo\.yml: not valid YAML"):
        load_source(path)


def test_duplicate_table_names(tmp_path):
    text = GOOD.format(name="demo")
    text += "  - {name: citizens, source_table: c2, primary_key: [pin], incremental_column: updated_at,\n"
    text += "     contract: population.citizens}\n"
    with pytest.raises(ConfigError, match="repeated: citizens"):
        load_source(write(tmp_path, "demo", text))


def test_every_invalid_file_is_listed(tmp_path):
    write(tmp_path, "good", GOOD.format(name="good"))
    write(tmp_path, "bad1", GOOD.format(name="bad1").replace("engine: postgresql", "engine: x"))
    write(tmp_path, "bad2", GOOD.format(name="bad2").replace('"@daily"', '"soon"'))
    with pytest.raises(ConfigError) as caught:
        load_sources(tmp_path)
    assert "bad1.yml" in str(caught.value) and "bad2.yml" in str(caught.value)
    assert "good.yml" not in str(caught.value)


def test_cli_validate_reports_and_fails(tmp_path):
    (tmp_path / "sources" / "demo_agency").mkdir(parents=True)
    bad = write(tmp_path / "sources" / "demo_agency", "demo", GOOD.format(name="demo").replace(
        "contract: population.citizens", "contract: population.nobody"))
    stray = write(tmp_path / "sources", "stray", GOOD.format(name="stray"))
    result = subprocess.run(["ndc", "sources", "validate", "--dir", str(tmp_path / "sources")], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 2
    assert "3 problem(s)" in result.stderr
    assert f"{bad}: ok" not in result.stdout
    assert f"{bad}: field 'tables.citizens.contract': unknown contract 'population.nobody'" in result.stderr
    assert f"{stray}: a source file belongs in its owner agency's folder" in result.stderr
    assert f"the agency has no DAG file {tmp_path / 'extract' / 'demo_agency.py'}" in result.stderr


def test_cli_validate_accepts_repository_sources():
    result = subprocess.run(["ndc", "sources", "validate"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "public_security/population.yml: ok (population, 3 tables)" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("5 source files of 4 agencies valid in")
