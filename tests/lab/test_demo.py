"""The README's demo on the embedded default: no NDC_WAREHOUSE_URL, a fresh data directory, its own server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from ndc.warehouse import embedded


@pytest.fixture
def embedded_env():
    # Not under pytest's tmp folders: they are 0700, and the server runs as its own user (as root).
    data_dir = Path(tempfile.mkdtemp(prefix="ndc-test-", dir="/var/tmp"))
    data_dir.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NDC_", "AIRFLOW"))}
    env.update(NDC_DATA_DIR=str(data_dir), NDC_EMBEDDED_PORT="54391", NDC_EMBEDDED_NO_SYNC="1")
    yield env
    subprocess.run(["ndc", "stop"], env=env, check=False, capture_output=True)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_embedded_server_starts_reuses_and_stops(embedded_env, monkeypatch):
    for key in ("NDC_DATA_DIR", "NDC_EMBEDDED_PORT", "NDC_EMBEDDED_NO_SYNC"):
        monkeypatch.setenv(key, embedded_env[key])
    monkeypatch.delenv("NDC_WAREHOUSE_URL", raising=False)
    url = embedded.start()
    assert url == "postgresql://postgres@127.0.0.1:54391/ndc"
    assert embedded.start() == url and embedded.is_running()
    with psycopg.connect(url.replace("/ndc", "/postgres")) as conn:
        assert conn.execute("show server_version").fetchone()[0].startswith("17.")
        assert conn.execute("show listen_addresses").fetchone()[0] == "127.0.0.1"
    assert embedded.stop() is True
    assert not embedded.is_running() and embedded.stop() is False


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_embedded_default(embedded_env):
    run = subprocess.run(["ndc", "demo", "--citizens", "100000"], env=embedded_env, capture_output=True,
                         text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = run.stdout
    for expected in ("== Summary ==", "quarantined rows by check:", "chain verified", "time per stage:",
                     "agency_quang_ngai.citizens", "ndc airflow", "shared.province_statistics",
                     "deliveries of the published version: quang_ngai 1, social_insurance 1",
                     "shared.identity_exceptions", "conformance per source"):
        assert expected in out
    print(out[out.index("== Summary =="):])
    base = "postgresql://postgres@127.0.0.1:54391/"
    with psycopg.connect(base + "ndc_src_population") as src:
        clean = {r[0] for r in src.execute(
            "select pin from citizens c where not exists (select 1 from simulator.defect_manifest m"
            " where m.table_name = 'citizens' and m.record_key = c.pin)")}
    with psycopg.connect(base + "ndc") as wh:
        shared = {r[0] for r in wh.execute("select citizen_id from shared.citizens")}
        landed = wh.execute("select count(*) from landing_population.citizens").fetchone()[0]
    assert clean <= shared and len(shared) == landed

    # The operator's page on the demo's data, as `ndc airflow` serves it, read in a real browser.
    _operator_page_on_the_demo(embedded_env, base + "ndc")


def _operator_page_on_the_demo(env: dict[str, str], warehouse_url: str) -> None:
    from tests.helpers.browser import ARTIFACTS, logged_in, ndc_airflow, operator_frame

    with psycopg.connect(warehouse_url) as wh:
        (rows_loaded,) = wh.execute("select rows_loaded from ndc_meta.ledger where kind = 'extract' and target ="
                                    " 'landing_population.citizens' order by ledger_id desc limit 1").fetchone()
        deliveries = wh.execute("select details->>'consumer', count(*) from ndc_meta.ledger where kind = 'delivery'"
                                " group by 1 order by 1").fetchall()
        (quarantined,) = wh.execute("select count(*) from quarantine.rows where replay_outcome is distinct from"
                                    " 'loaded'").fetchone()
    with ndc_airflow(env, Path(env["NDC_DATA_DIR"]) / "ndc-airflow.log") as (base, password):
        with logged_in(base, password) as page:
            frame = operator_frame(page, base)
            assert frame.get_by_test_id("last-load-rows-loaded-population.citizens").get_attribute(
                "data-value") == str(rows_loaded) and rows_loaded > 90_000
            assert frame.get_by_test_id("quarantine-total").inner_text() == str(quarantined) and quarantined > 0
            for agency, count in deliveries:
                assert frame.get_by_test_id(f"sharing-agency-{agency}").get_attribute("data-value") == str(count)
            assert frame.get_by_test_id("chart-sharing").locator("[data-point]").count() == len(deliveries) == 2
            assert frame.get_by_test_id("chart-quarantine").locator("[data-point]").count() > 0
            page.screenshot(path=str(ARTIFACTS / "demo-airflow-ui-operator-page.png"))
            page.goto(base + "/ndc/", wait_until="networkidle")
            page.screenshot(path=str(ARTIFACTS / "demo-operator-page.png"), full_page=True)
        assert (ARTIFACTS / "demo-operator-page.png").stat().st_size > 10_000
