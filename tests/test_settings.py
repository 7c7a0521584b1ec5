"""Settings: every NDC_* variable declared once in ndc.settings, parsed when asked, named with its bad value in
errors; the README's settings table is the module's own; no module reads a setting at import time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from ndc import settings as ndc_settings
from ndc.errors import ConfigError
from ndc.settings import Settings, declared, settings_table
from tests.helpers import REPO


def _readme_table() -> list[str]:
    """The rows of the first table under the README's `## Settings`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Settings\n(.*?)(?=^## )", text, flags=re.DOTALL | re.MULTILINE)
    assert section, "README.md has no ## Settings section"
    lines = section.group(1).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip("|").split(" | ")]


def test_the_readme_table_is_the_declared_settings_with_their_defaults():
    readme = {_cells(row)[0].strip("`"): _cells(row) for row in _readme_table()[2:]}
    module = {_cells(row)[0].strip("`"): _cells(row) for row in settings_table().splitlines()[2:]}
    assert list(readme) == list(module), "README's settings table lists other variables than ndc.settings declares"
    assert {name: row[2] for name, row in readme.items()} == {name: row[2] for name, row in module.items()}, \
        "defaults differ"
    assert _readme_table() == settings_table().splitlines(), "regenerate the table: python -m ndc.settings"


def test_each_variable_is_declared_once_and_documented():
    names = [s.name for s in declared()]
    assert len(names) == len(set(names)) and all(n.startswith("NDC_") for n in names)
    assert all(s.meaning and s.shown for s in declared())
    assert "NDC_DAGS_DIR" in (ndc_settings.__doc__ or ""), "the module's docstring carries the table"


def test_defaults():
    settings = Settings({})
    root = ndc_settings.checkout_root()
    assert root == REPO, "this package runs from the checkout"
    assert settings.dags_dir == REPO / "dags" and settings.sources_dir == REPO / "dags" / "sources"
    assert settings.contracts_dir == REPO / "dags" / "contracts"
    assert settings.dbt_project_dir == REPO / "dbt_project"
    assert settings.warehouse_url == "postgresql://postgres@127.0.0.1:54329/ndc"
    assert settings.operator_url == settings.warehouse_url
    assert (settings.batch_bytes, settings.retention_days, settings.http_attempts) == (8 * 1024 * 1024, 730, 8)
    assert (settings.http_max_body_bytes, settings.http_max_pages, settings.http_deadline) == (
        64 * 1024 * 1024, 100_000, timedelta(hours=6))
    assert (settings.file_max_bytes, settings.parquet_max_decoded_bytes) == (1024**3, 2 * 1024**3)
    assert (settings.task_retries, settings.retry_delay) == (2, timedelta(seconds=60))
    assert (settings.conform_nodes, settings.conform_poll) == ("auto", timedelta(seconds=1))
    assert (settings.publish_max_row_change, settings.gate2_batch_rows) == (0.5, 50_000)
    assert settings.contract_modules == () and settings.embedded_no_sync is False
    for unset in ("ledger_anchor_url", "approver_url", "alert_webhook", "exchange_hash_key"):
        assert getattr(settings, unset) is None
    assert Settings({"NDC_BATCH_BYTES": "  "}).batch_bytes == 8 * 1024 * 1024, "blank means the default"


def test_derived_defaults_follow_the_settings_they_come_from(tmp_path):
    bundle = Settings({"NDC_DAGS_DIR": str(tmp_path), "NDC_AGENCIES_DIR": "/elsewhere/agencies"})
    assert [bundle.sources_dir, bundle.exchanges_dir, bundle.agreements_dir, bundle.contracts_dir] == [
        tmp_path / "sources", tmp_path / "exchanges", tmp_path / "agreements", tmp_path / "contracts"]
    assert bundle.agencies_dir == Path("/elsewhere/agencies")
    served = Settings({"NDC_EMBEDDED_PORT": "54400"})
    assert served.warehouse_url == "postgresql://postgres@127.0.0.1:54400/ndc" == served.operator_url
    assert Settings({"NDC_WAREHOUSE_URL": "postgresql://w@h/ndc"}).operator_url == "postgresql://w@h/ndc"


def test_values_are_parsed_by_kind():
    settings = Settings({"NDC_RETRY_DELAY_SECONDS": "1.5", "NDC_PUBLISH_MAX_ROW_CHANGE": "0.25",
                         "NDC_EMBEDDED_NO_SYNC": "Yes", "NDC_CONTRACT_MODULES": " bundle.contracts, other ,,",
                         "NDC_TASK_RETRIES": "0", "NDC_ALERT_WEBHOOK": "https://chat.example/hook?t=1",
                         "NDC_CONFORM_NODES": "after", "NDC_EXCHANGE_HASH_KEY": "k" * 16})
    assert settings.retry_delay == timedelta(seconds=1.5)
    assert settings.publish_max_row_change == 0.25
    assert settings.embedded_no_sync is True and Settings({"NDC_EMBEDDED_NO_SYNC": "0"}).embedded_no_sync is False
    assert settings.contract_modules == ("bundle.contracts", "other")
    assert settings.task_retries == 0 and settings.conform_nodes == "after"
    assert settings.alert_webhook == "https://chat.example/hook?t=1" and settings.exchange_hash_key == "k" * 16


@pytest.mark.parametrize(("name", "value", "message"), [
    ("NDC_BATCH_BYTES", "16MiB", r"NDC_BATCH_BYTES='16MiB': expected a whole number of at least 1024"),
    ("NDC_BATCH_BYTES", "100", r"NDC_BATCH_BYTES='100': expected a whole number of at least 1024"),
    ("NDC_EMBEDDED_PORT", "70000", r"NDC_EMBEDDED_PORT='70000': expected a whole number from 1 to 65535"),
    ("NDC_TASK_RETRIES", "-1", r"NDC_TASK_RETRIES='-1'"),
    ("NDC_PUBLISH_MAX_ROW_CHANGE", "0", r"NDC_PUBLISH_MAX_ROW_CHANGE='0': expected a number above 0"),
    ("NDC_PUBLISH_MAX_ROW_CHANGE", "nan", r"NDC_PUBLISH_MAX_ROW_CHANGE='nan'"),
    ("NDC_CONFORM_POLL_SECONDS", "0", r"NDC_CONFORM_POLL_SECONDS='0': expected a number of seconds, more than 0"),
    ("NDC_RETRY_DELAY_SECONDS", "1m", r"NDC_RETRY_DELAY_SECONDS='1m': expected a number of seconds, at least 0"),
    ("NDC_EMBEDDED_NO_SYNC", "maybe", r"NDC_EMBEDDED_NO_SYNC='maybe': expected 1, true"),
    ("NDC_CONFORM_NODES", "sometimes", r"NDC_CONFORM_NODES='sometimes': expected auto or concurrent or after"),
    ("NDC_CONTRACT_MODULES", "good, bad-name", r"NDC_CONTRACT_MODULES='good, bad-name'.*'bad-name' is not one"),
    ("NDC_WAREHOUSE_URL", "127.0.0.1:5432/ndc", r"NDC_WAREHOUSE_URL='127.0.0.1:5432/ndc': expected a URL"),
])
def test_a_bad_value_is_named_with_its_variable(name, value, message):
    attribute = next(s.attribute for s in declared() if s.name == name)
    with pytest.raises(ConfigError, match=message):
        getattr(Settings({name: value}), attribute)


def test_errors_never_show_secrets():
    cases = {"NDC_WAREHOUSE_URL": ("mysql://ndc:pa55word@db.example:3306/ndc", "'mysql://db.example/…'"),
             "NDC_ALERT_WEBHOOK": ("ftp://hooks.example/T0KEN/abc", "'ftp://hooks.example/…'"),
             "NDC_OPERATOR_URL": ("host=db user=x password=pa55word", "'…'"),
             "NDC_EXCHANGE_HASH_KEY": ("pa55word", "at least 16 characters, got 8")}
    for name, (value, shown) in cases.items():
        attribute = next(s.attribute for s in declared() if s.name == name)
        with pytest.raises(ConfigError) as raised:
            getattr(Settings({name: value}), attribute)
        assert name in str(raised.value) and shown in str(raised.value)
        assert "pa55word" not in str(raised.value) and "T0KEN" not in str(raised.value)


def test_settings_are_read_when_asked(monkeypatch):
    monkeypatch.setenv("NDC_GATE2_BATCH_ROWS", "7")
    assert ndc_settings.get_settings().gate2_batch_rows == 7
    monkeypatch.setenv("NDC_GATE2_BATCH_ROWS", "nonsense")
    made = ndc_settings.get_settings()  # a bad value fails where it is used, not for every setting
    assert made.retention_days == 730
    with pytest.raises(ConfigError, match="NDC_GATE2_BATCH_ROWS='nonsense'"):
        made.gate2_batch_rows  # noqa: B018


def test_dbt_environment_carries_the_warehouse_connection_without_changing_this_process():
    before = dict(os.environ)
    env = ndc_settings.dbt_environment("postgresql://dbt%40team:p%2Fw@db.example:6543/hub")
    assert {k: env[k] for k in env if k.startswith("NDC_DBT_")} == {
        "NDC_DBT_HOST": "db.example", "NDC_DBT_PORT": "6543", "NDC_DBT_USER": "dbt@team", "NDC_DBT_PASSWORD": "p/w",
        "NDC_DBT_DBNAME": "hub"}
    assert env["DO_NOT_TRACK"] == "1" and env["PATH"] == os.environ["PATH"]
    assert dict(os.environ) == before


IMPORT_ALL = """
import importlib, json, os, pkgutil, sys
from pathlib import Path
import ndc
import pandera.polars, polars  # they set variables of their own at import (pyspark's, jemalloc's)
before = dict(os.environ)
names = [m.name for m in pkgutil.walk_packages(ndc.__path__, "ndc.")]
held = []
for name in names:
    module = importlib.import_module(name)
    held += [f"{name}.{k}" for k, v in vars(module).items() if isinstance(v, (str, Path)) and PROBE in str(v)]
changed = sorted(k for k in before.keys() | os.environ.keys() if before.get(k) != os.environ.get(k))
print(json.dumps({"modules": len(names), "file": ndc.__file__, "held": held, "changed": changed}))
"""
PROBE = "ndc-import-probe"


def test_no_module_reads_a_setting_at_import_time(tmp_path):
    """Every module of the package imports with every setting set to a value its parser refuses (a module that read
    one at import would fail), or, for folders, to a path no module may hold afterwards. Importing changes no
    environment variable either."""
    probes = {s.name: f"/nonexistent/{PROBE}/{s.name}" if s.parse is ndc_settings.path else "not valid"
              for s in declared()}
    for setting in declared():
        if setting.parse is not ndc_settings.path:
            with pytest.raises(ConfigError):
                getattr(Settings(probes), setting.attribute)
    env = {**os.environ, **probes, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__UNIT_TEST_MODE": "True", "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", f"PROBE = {PROBE!r}\n" + IMPORT_ALL], env=env, capture_output=True,
                         text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"] == str(REPO / "plugins" / "ndc" / "__init__.py")
    assert result["modules"] > 50
    assert result["held"] == [] and result["changed"] == []
