"""The seed's size (issue 19): 3,000 generated sources of 95 agencies (:mod:`ndc_lab.national`).

Every DAG file of the generated bundle is parsed as the dag-processor parses it (one forked process per file, Airflow's
30 s ``dagbag_import_timeout``, no database reachable): no import error, every DAG there, no file over 5 s. A broken
source file breaks its own agency's DAGs only, with an import error naming the file and the field, and ``ndc sources
validate`` names every bad file of the 3,000 at once. (Per-file parse time against the number of sources and a day's
runs under a real scheduler are figures of ``ndc bench scale``.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from ndc_lab import national
from ndc_lab.bench.scale import parse_bundle

from ndc.config.sources import load_sources

SOURCES, AGENCIES = 3000, 95
PARSE_LIMIT_S = 5.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> national.National:
    return national.generate(tmp_path_factory.mktemp("national"), SOURCES, AGENCIES)


@pytest.fixture(scope="module")
def parsed(bundle, tmp_path_factory) -> dict:
    return parse_bundle(bundle.dags, tmp_path_factory.mktemp("home"))


def test_the_generated_configuration_is_the_seeds_size(bundle):
    sources = load_sources(bundle.dags / "sources")
    assert len(sources) == SOURCES
    agencies = {s.path.parent.name for s in sources}
    assert len(agencies) == AGENCIES
    assert {p.stem for p in (bundle.dags / "extract").glob("*.py")} == agencies, "one DAG file per agency"
    sizes = sorted(sum(s.path.parent.name == a for s in sources) for a in agencies)
    assert sizes[0] >= 1 and sizes[-1] <= 2 * SOURCES // AGENCIES, sizes
    # extracts are spread over the day: no minute starts more than its share
    starts = [s.schedule for s in sources]
    assert max(starts.count(x) for x in set(starts)) <= -(-SOURCES // 1440), "staggered schedules"
    assert {s.connection.conn_id for s in sources} <= {f"ndc_src_{t}" for t in national.TEMPLATES}


def test_every_dag_file_parses_within_the_timeout(bundle, parsed):
    assert parsed["errors"] == {}
    assert len(parsed["dags"]) == len(set(parsed["dags"])) == bundle.expected_dags
    assert len(parsed["files"]) == bundle.dag_files
    slowest, seconds = parsed["slowest"]
    print(f"{len(parsed['files'])} DAG files, {len(parsed['dags'])} DAGs; slowest file {slowest}: {seconds:.2f} s")
    assert None not in parsed["files"].values()
    assert seconds <= PARSE_LIMIT_S, f"{slowest} took {seconds:.1f} s to parse"


def test_the_conform_dag_file_does_no_per_source_work(bundle, parsed):
    """The conform DAG parses the same at 3,000 sources as at 5: a time schedule, no Asset per landing table."""
    import os
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import conform; d = conform.conform;"
            " print(type(d.timetable).__name__, len(d.tasks))")
    env = {**os.environ, "NDC_DAGS_DIR": str(bundle.dags), "NDC_WAREHOUSE_URL": "postgresql://nobody@127.0.0.1:9/x"}
    out = subprocess.run([sys.executable, "-c", code, str(bundle.dags)], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    kind, tasks = out.stdout.split()[-2:]
    assert kind == "CronTriggerTimetable"
    assert int(tasks) < 100, "one task per dbt model, none per source"
    assert "conform" in parsed["dags"]


def test_a_broken_source_file_breaks_only_its_agencys_dags(bundle, tmp_path):
    broken_agency = sorted((bundle.dags / "sources").iterdir())[7]
    victim = sorted(broken_agency.glob("*.yml"))[0]
    text = victim.read_text(encoding="utf-8")
    victim.write_text(text.replace("schedule: ", "schedule: every day #", 1), encoding="utf-8")
    try:
        found = parse_bundle(bundle.dags, tmp_path)
    finally:
        victim.write_text(text, encoding="utf-8")
    dag_file = f"extract/{broken_agency.name}.py"
    assert list(found["errors"]) == [dag_file]
    message = found["errors"][dag_file]
    assert str(victim) in message and "field 'schedule'" in message and "cron expression" in message
    lost = {f"extract_{p.stem}" for p in broken_agency.glob("*.yml")}
    assert lost.isdisjoint(found["dags"])
    others = {f"extract_{p.stem}" for p in (bundle.dags / "sources").glob("*/*.yml")} - lost
    assert others <= set(found["dags"]), "every other agency's DAGs are there"


def test_sources_validate_names_every_bad_file_of_3000_at_once(bundle, tmp_path):
    sources = bundle.dags / "sources"
    folders = sorted(sources.iterdir())
    bad = [sorted(folders[i].glob("*.yml"))[0] for i in (3, 40, 90)]
    saved = {p: p.read_text(encoding="utf-8") for p in bad}
    stray = sources / "stray_source.yml"
    original = sorted(folders[20].glob("*.yml"))[0]
    twin = folders[10] / original.name  # the same source name in two agency folders
    try:
        bad[0].write_text(re.sub(r"engine: \w+", "engine: oracle", saved[bad[0]]), encoding="utf-8")
        bad[1].write_text(saved[bad[1]].replace("- name: ", "- nmae: ", 1), encoding="utf-8")
        unknown = ("tables:\n- name: x\n  source_table: x\n  primary_key: [id]\n  incremental_column: updated_at\n"
                   "  contract: no.such_contract\n")
        bad[2].write_text(saved[bad[2]].replace("tables:\n", unknown, 1), encoding="utf-8")
        stray.write_text(saved[bad[1]], encoding="utf-8")
        twin.write_text(original.read_text(encoding="utf-8"), encoding="utf-8")
        out = subprocess.run(["ndc", "sources", "validate", "--dir", str(sources), "--quiet"], capture_output=True,
                             text=True, check=False, timeout=300)
    finally:
        for path, text in saved.items():
            path.write_text(text, encoding="utf-8")
        stray.unlink(missing_ok=True)
        twin.unlink(missing_ok=True)
    assert out.returncode == 2
    assert f"{bad[0]}: invalid source file" in out.stderr and "field 'connection.engine'" in out.stderr
    assert f"{bad[1]}: invalid source file" in out.stderr and "nmae" in out.stderr
    assert f"{bad[2]}: field 'tables.x.contract'" in out.stderr and "unknown contract 'no.such_contract'" in out.stderr
    assert f"{stray}: a source file belongs in its owner agency's folder" in out.stderr
    assert f"source name {original.stem!r} is used by more than one file: {twin}, {original}" in out.stderr \
        or f"source name {original.stem!r} is used by more than one file: {original}, {twin}" in out.stderr
    valid = subprocess.run(["ndc", "sources", "validate", "--dir", str(sources), "--quiet"], capture_output=True,
                           text=True, check=False, timeout=300)
    assert valid.returncode == 0, valid.stderr
    print(valid.stdout.strip())
    assert valid.stdout.startswith(f"{SOURCES} source files of {AGENCIES} agencies valid in")


def test_an_agency_folder_without_its_dag_file_is_named(bundle):
    folder = sorted((bundle.dags / "sources").iterdir())[5]
    dag_file = bundle.dags / "extract" / f"{folder.name}.py"
    text = dag_file.read_text(encoding="utf-8")
    dag_file.unlink()
    try:
        out = subprocess.run(["ndc", "sources", "validate", "--dir", str(bundle.dags / "sources"), "--quiet"],
                             capture_output=True, text=True, check=False, timeout=300)
    finally:
        dag_file.write_text(text, encoding="utf-8")
    assert out.returncode == 2
    assert f"{folder}: the agency has no DAG file {dag_file}" in out.stderr


def test_the_cached_registry_is_read_again_when_a_file_changes(tmp_path):
    small = national.generate(tmp_path, 12, 3)
    first = {s.name: s.schedule for s in load_sources(small.dags / "sources")}
    path = next((small.dags / "sources").glob("*/*.yml"))
    path.write_text(path.read_text(encoding="utf-8").replace(f"schedule: {first[path.stem]}",
                                                              "schedule: '@hourly'"), encoding="utf-8")
    again = {s.name: s.schedule for s in load_sources(small.dags / "sources")}
    assert again[path.stem] == "@hourly" and first[path.stem] != "@hourly"
    assert {k: v for k, v in again.items() if k != path.stem} == {k: v for k, v in first.items() if k != path.stem}


def test_generating_again_replaces_the_bundle(tmp_path):
    """Generating twice replaces the bundle (a bench reruns it): the same sources, no leftovers."""
    first = national.generate(tmp_path, 30, 5)
    extra = first.dags / "sources" / "leftover.yml"
    extra.write_text("name: leftover\n")
    second = national.generate(tmp_path, 30, 5)
    assert not extra.exists()
    assert len(list(Path(second.dags / "sources").glob("*/*.yml"))) == 30
