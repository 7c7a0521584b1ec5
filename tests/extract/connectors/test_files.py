"""The education source end to end: file drops (CSV, Parquet, Windows-1258, BOM) through the files connector,
the gate and the loader into landing; every file loaded once by content hash; drift named by file."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from ndc_lab.simulate import education
from ndc_lab.simulate.common import SourceSpec

from ndc.config.sources import find_source
from ndc.errors import NdcError, SchemaDriftError
from ndc.extract.connectors.files import check_complete_csv
from ndc.settings import get_settings
from ndc.tasks import extract_table
from tests.helpers.acceptance import assert_matches_manifest
from tests.helpers.database import query, scalar

WINDOW = (datetime(2024, 7, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
TABLES = ("schools", "students", "enrolments")


@pytest.fixture(scope="module")
def drop(dbs, tmp_path_factory):
    root = tmp_path_factory.mktemp("education_drop")
    os.environ["AIRFLOW_CONN_NDC_SRC_EDUCATION"] = root.as_uri()
    spec = SourceSpec(citizens=20_000, seed=5, defect_rate=0.002)
    sim = education.simulate(spec)
    education.write(root.as_uri(), sim, spec)
    results = {t: extract_table("education", t, *WINDOW, run_id="first") for t in TABLES}
    yield root, sim, results
    os.environ.pop("AIRFLOW_CONN_NDC_SRC_EDUCATION", None)


def test_every_defect_has_its_expected_outcome(dbs, drop):
    _, sim, results = drop
    source = find_source(get_settings().sources_dir, "education")
    tables = {t: f.drop([c for c in f.columns if c.startswith("_")]) for t, f in sim.tables.items()}
    summary = assert_matches_manifest(dbs.warehouse, source, tables, sim.manifest)
    print(summary)
    assert all(results[t].files for t in TABLES)
    encodings = {r[0] for r in query(dbs.warehouse, "select distinct encoding from ndc_meta.files")}
    assert {"cp1258", "utf-8-sig", "parquet"} <= encodings


def test_second_run_loads_no_file_again(dbs, drop):
    before = scalar(dbs.warehouse, "select count(*) from landing_education.students_history")
    again = extract_table("education", "students", *WINDOW, run_id="second")
    assert again.files == [] and again.rows_in == 0 and again.batches == 0
    assert scalar(dbs.warehouse, "select count(*) from landing_education.students_history") == before


def test_a_renamed_copy_is_not_loaded_and_a_changed_file_is(dbs, drop):
    root, _, _ = drop
    csvs = sorted((root / "schools").rglob("*.csv"))
    original = next(p for p in csvs if p.read_bytes().startswith(b"school_id"))
    shutil.copy(original, original.with_name("copy_of_" + original.name))
    assert extract_table("education", "schools", *WINDOW, run_id="copy").rows_in == 0

    frame = pl.read_csv(original, infer_schema=False)
    first = frame.row(0, named=True)
    changed = frame.with_columns(
        pl.when(pl.col("school_id") == first["school_id"]).then(pl.lit("Trường Tiểu học Đổi Tên"))
        .otherwise(pl.col("name")).alias("name"),
        pl.when(pl.col("school_id") == first["school_id"]).then(pl.lit("2025-12-31T23:00:00Z"))
        .otherwise(pl.col("exported_at")).alias("exported_at"))
    target = original.with_name("resent_" + original.name)
    changed.write_csv(target)
    result = extract_table("education", "schools", *WINDOW, run_id="changed")
    assert result.files == [str(target)] and result.rows_new_versions == 1
    assert scalar(dbs.warehouse, "select name from landing_education.schools where school_id = %s",
                  (first["school_id"],)) == "Trường Tiểu học Đổi Tên"


def test_a_file_missing_a_column_blocks_the_load_by_name(dbs, drop):
    root, _, _ = drop
    bad = root / "students" / "2099-2100" / "01.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("student_id,pin,full_name,sex,province_code,exported_at\n"
                   "HS0000000001,001200000001,Nguyễn Văn A,M,01,2025-12-31T00:00:00Z\n", encoding="utf-8")
    batches = scalar(dbs.warehouse, "select count(*) from ndc_meta.batches")
    try:
        with pytest.raises(SchemaDriftError) as caught:
            extract_table("education", "students", *WINDOW, run_id="drift")
    finally:
        shutil.rmtree(bad.parent)
    assert f"source education, file {bad}: column birth_date: missing" in str(caught.value)
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.batches") == batches


@pytest.mark.parametrize(("text", "problem"), [
    ("a,b\n1,2\n", None),
    ("a,b\r\n1,2\r\n", None),  # CRLF
    ('a,b\n1,"two\nlines"\n', None),  # a quoted newline is part of the value
    ('a,b\r\n1,"two\r\nlines"\r\n', None),
    ("a,b\n1,2\n\n", None),  # a blank last line
    ("a,b\n", None),  # header only
    ("a,b\n1,2", "line 2 (the last) has no line ending"),
    ("a,b\n1,2\n3\n", "line 3 has 1 field, the header has 2"),
    ("a,b\n1,2,3\n", "line 2 has 3 fields, the header has 2"),
    ('a,b\n1,"Nguy\n', "line 2: unexpected end of data"),  # cut after a newline inside a quoted value
    ("a,b\n1," + "x" * 200_000 + "\n", None),  # larger than the csv module's default field limit
])
def test_the_complete_csv_check(text, problem):
    path = Path("/drop/students/01.csv")
    if problem is None:
        check_complete_csv(path, text)
        return
    with pytest.raises(NdcError) as caught:
        check_complete_csv(path, text)
    assert str(caught.value).startswith(f"{path}: ") and problem in str(caught.value)


@pytest.mark.parametrize("cut", ["mid_line", "short_record"])
def test_a_csv_cut_outside_a_quoted_field_blocks_the_load_naming_file_and_line(dbs, drop, cut):
    """A transfer cut at an arbitrary byte of an unquoted field (polars alone would load the cut row with nulls),
    or a record missing its last fields: the load fails naming the file and the line; nothing of it is loaded or
    recorded, and the complete file loads on the next run."""
    root, _, _ = drop
    header = "student_id,pin,full_name,birth_date,sex,province_code,exported_at"
    n = 1 if cut == "mid_line" else 3  # distinct rows: a file already loaded (same content) is skipped
    rows = [f"HS099000000{n},00120099000{n},Nguyễn Văn Cắt,2010-05-01,M,01,2025-12-30T00:00:00Z",
            f"HS099000000{n + 1},00120099000{n + 1},Trần Thị Cắt,2011-06-02,F,79,2025-12-30T00:00:00Z"]
    complete = "\n".join([header, *rows]) + "\n"
    cut_text = (complete[: complete.rindex(",79,") + 2] if cut == "mid_line"
                else "\n".join([header, rows[0].rsplit(",", 2)[0], rows[1]]) + "\n")
    bad = root / "students" / f"2098-2099-{cut}" / "01.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text(cut_text, encoding="utf-8")
    history = scalar(dbs.warehouse, "select count(*) from landing_education.students_history")
    try:
        with pytest.raises(NdcError) as caught:
            extract_table("education", "students", *WINDOW, run_id=f"cut-{cut}")
        line = 3 if cut == "mid_line" else 2
        assert str(bad) in str(caught.value) and f"line {line}" in str(caught.value)
        assert scalar(dbs.warehouse, "select count(*) from landing_education.students_history") == history
        assert not scalar(dbs.warehouse, "select count(*) from ndc_meta.files where path = %s", (str(bad),))
        bad.write_text(complete, encoding="utf-8")
        result = extract_table("education", "students", *WINDOW, run_id=f"complete-{cut}")
        assert result.files == [str(bad)] and result.rows_loaded == 2
    finally:
        shutil.rmtree(bad.parent)


def test_value_that_cannot_be_cast_keeps_its_raw_text_in_quarantine(dbs, drop):
    reasons = query(dbs.warehouse, "select reasons from quarantine.rows where dataset = 'education.students'"
                    " and 'value_type(birth_date)' = any(checks) limit 1")
    assert reasons, "the simulator injects impossible dates"
    detail = reasons[0][0]["value_type(birth_date)"]
    assert detail["column"] == "birth_date" and "-" in detail["value"]


def test_drop_folder_is_the_connection(dbs, drop):
    root, _, _ = drop
    assert Path(root).is_dir()
    missing = root / "nowhere"
    os.environ["AIRFLOW_CONN_NDC_SRC_EDUCATION"] = missing.as_uri()
    try:
        with pytest.raises(Exception, match=r"drop folder .*nowhere does not exist"):
            extract_table("education", "schools", *WINDOW, run_id="nowhere")
    finally:
        os.environ["AIRFLOW_CONN_NDC_SRC_EDUCATION"] = root.as_uri()
