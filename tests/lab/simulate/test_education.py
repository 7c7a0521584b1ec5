"""The education simulator: deterministic drops whose every defect the gate accounts for.

The gate test reads the written files back as the files connector does (CSV decoded as UTF-8 with the BOM
dropped, else as cp1258; every CSV value text) and casts the CSV text to the contract's types here (dates
``%Y-%m-%d``, timestamps ``%Y-%m-%dT%H:%M:%SZ`` in UTC, integers), so an impossible date is rejected as
``value_type(birth_date)`` before pandera runs; then each table goes through ``ndc.contracts.validation.validate``.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from pathlib import Path

import polars as pl
import pytest
from ndc_lab.simulate import education
from ndc_lab.simulate.common import SourceSpec

from ndc.config.sources import load_source
from ndc.contracts import get_contract, validation

REPO = Path(__file__).resolve().parents[3]
SPEC = SourceSpec(citizens=20_000, seed=11, defect_rate=0.002)
KEYS = {"schools": "school_id", "students": "student_id", "enrolments": "enrolment_id"}


@pytest.fixture(scope="module")
def sim():
    return education.simulate(SPEC)


@pytest.fixture(scope="module")
def root(sim, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("drops")
    education.write(folder.as_uri(), sim, SPEC)
    return folder


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1258")


def _read(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(io.StringIO(_decode(path.read_bytes())), infer_schema=False)


def _cast(column: str, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    value = pl.col(column)
    if source != pl.String or target == pl.String:
        return value.cast(target)
    if target == pl.Date:
        return value.str.to_date("%Y-%m-%d", strict=False)
    if isinstance(target, pl.Datetime):
        return value.str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="us", time_zone="UTC", strict=False)
    return value.cast(target, strict=False)


def _as_platform(root: Path, table: str) -> tuple[pl.DataFrame, set[str], dict[str, list[str]]]:
    """The table's rows typed as the contract wants them; the keys and failed casts of rows that cannot be."""
    columns = get_contract(f"education.{table}").columns
    typed, uncastable = [], {}
    for path in sorted((root / table).rglob("*")):
        if path.suffix not in (".csv", ".parquet"):
            continue
        raw = _read(path).select(list(columns))
        cast = raw.with_columns(_cast(c, raw.schema[c], t).alias(c) for c, t in columns.items())
        bad = pl.any_horizontal(raw[c].is_not_null() & cast[c].is_null() for c in columns)
        for raw_row, cast_row in zip(raw.filter(bad).iter_rows(named=True), cast.filter(bad).iter_rows(named=True),
                                     strict=True):
            uncastable[str(raw_row[KEYS[table]])] = [f"value_type({c})" for c in columns
                                                     if raw_row[c] is not None and cast_row[c] is None]
        typed.append(cast.filter(~bad))
    return pl.concat(typed), set(uncastable), uncastable


def _manifest(sim, table: str, outcome: str) -> pl.DataFrame:
    return sim.manifest.filter((pl.col("table_name") == table) & (pl.col("expected_outcome") == outcome))


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed(sim):
    again = education.simulate(SPEC)
    for table in education.TABLES:
        assert again.tables[table].equals(sim.tables[table]), table
    assert again.manifest.equals(sim.manifest)
    assert again.crosswalks["student_to_pin"].equals(sim.crosswalks["student_to_pin"])
    other = education.simulate(SourceSpec(citizens=20_000, seed=12, defect_rate=0.002))
    assert not other.tables["students"].equals(sim.tables["students"])


def test_students_are_the_school_age_citizens(sim):
    from ndc_lab.simulate.common import population_citizens

    citizens = population_citizens(SPEC).filter(pl.col("birth_date").dt.year().is_between(2006, 2021))
    crosswalk = sim.crosswalks["student_to_pin"]
    assert crosswalk.height == citizens.height == sim.tables["students"]["student_id"].n_unique()
    assert set(crosswalk["pin"]) == set(citizens["pin"])
    assert sim.tables["students"]["pin"].null_count() > 0  # older records without a PIN are in the crosswalk too


@pytest.mark.parametrize("table", education.TABLES)
def test_gate_accounts_for_every_defect(sim, root, table):
    typed, uncastable_keys, uncastable = _as_platform(root, table)
    result = validation.validate(typed, get_contract(f"education.{table}"))
    key = KEYS[table]
    found = result.rejected.select(pl.col(key).cast(pl.String), "_checks")
    rejected = dict(found.iter_rows())
    rejected |= {k: v for k, v in uncastable.items() if k not in rejected}
    quarantined = _manifest(sim, table, "quarantined")
    assert quarantined.height and result.passed.height > 10 * quarantined.height
    assert set(rejected) == set(quarantined["record_key"]), "no clean row quarantined, no defect missed"
    for record_key, check in quarantined.select("record_key", "expected_check").iter_rows():
        assert check in rejected[record_key], (record_key, check, rejected[record_key])
    assert uncastable_keys <= set(quarantined.filter(pl.col("kind") == "impossible_date")["record_key"])
    assert result.repaired == _manifest(sim, table, "repaired").height
    passed = result.passed[key].cast(pl.String)
    assert set(_manifest(sim, table, "exception")["record_key"]) <= set(passed)
    superseded = _manifest(sim, table, "superseded")
    counts = dict(pl.DataFrame({"k": passed}).group_by("k").len().iter_rows())
    assert all(counts.get(k) == 2 for k in superseded["record_key"]), "both versions reach the merge"


def test_manifest_covers_every_kind(sim):
    kinds = set(sim.manifest.select("table_name", "kind").unique().iter_rows())
    for table, kind in (("students", "pin_format"), ("students", "impossible_date"), ("students", "future_birth_date"),
                        ("students", "unknown_or_retired_province"), ("students", "blank_name"),
                        ("students", "duplicate_key"), ("students", "nfd_text"), ("students", "legacy_encoding"),
                        ("schools", "unknown_or_retired_province"), ("schools", "blank_name"),
                        ("schools", "nfd_text"), ("enrolments", "grade_out_of_range"),
                        ("enrolments", "orphan_student"), ("enrolments", "orphan_school")):
        assert (table, kind) in kinds
    losers = _manifest(sim, "students", "superseded")
    students = sim.tables["students"]
    for record_key, version in losers.select("record_key", "row_version").iter_rows():
        stamps = students.filter(pl.col("student_id") == record_key)["exported_at"].sort().to_list()
        files = students.filter(pl.col("student_id") == record_key)["_file"].n_unique()
        assert stamps[0] == version < stamps[1] and stamps[0].date() == stamps[1].date() and files == 2


def test_written_files(sim, root):
    for table in education.TABLES:
        frame = sim.tables[table]
        for relative in frame["_file"].unique():
            assert (root / relative).is_file(), relative
        rows = sum(_read(p).height for p in (root / table).rglob("*") if p.suffix in (".csv", ".parquet"))
        assert rows == frame.height, table
    assert not list(root.rglob(".*.tmp"))
    assert (root / "_simulator" / "defect_manifest.csv").is_file()
    crosswalk = pl.read_csv(root / "_simulator" / "student_to_pin.csv", schema_overrides={"pin": pl.String})
    assert crosswalk.height == sim.crosswalks["student_to_pin"].height


def test_legacy_and_bom_csv(sim, root):
    students = sim.tables["students"]
    legacy_files = students.filter(pl.col("_encoding") == "cp1258")["_file"].unique().sort().to_list()
    assert legacy_files
    for relative in legacy_files:
        data = (root / relative).read_bytes()
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        decoded = pl.read_csv(io.StringIO(data.decode("cp1258")), infer_schema=False)
        expected = students.filter(pl.col("_file") == relative)
        names = [unicodedata.normalize("NFC", n) for n in decoded["full_name"].to_list()]
        assert names == expected["full_name"].to_list()
        assert decoded["full_name"].to_list() != expected["full_name"].to_list()  # tone marks arrive decomposed
    bom_files = students.filter(pl.col("_encoding") == "utf-8-sig")["_file"].unique().to_list()
    assert bom_files
    for relative in bom_files:
        assert (root / relative).read_bytes().startswith(b"\xef\xbb\xbf")
    parquet = pl.read_parquet(next((root / "students").rglob("*.parquet")))
    assert parquet.schema["birth_date"] == pl.Date
    assert parquet.schema["exported_at"] == pl.Datetime("us", "UTC")


def test_write_is_byte_identical_and_replaces_old_drops(sim, tmp_path):
    education.write(tmp_path.as_uri(), sim, SPEC)
    first = _tree(tmp_path)
    stray = tmp_path / "students" / "2019-2020" / "01.csv"
    stray.parent.mkdir(parents=True)
    stray.write_text("old drop")
    education.write(tmp_path.as_uri(), sim, SPEC)
    assert _tree(tmp_path) == first


def test_windows_1258_round_trip():
    for text in ("Nguyễn Thị Ngọc Ánh", "Trường THPT Lương Thế Vinh", "Đặng Hữu Phước", "Phường Ỷ La", "Ợ ằ ẫ"):
        data = education.encode_cp1258(text)
        assert unicodedata.normalize("NFC", data.decode("cp1258")) == text
        assert data.decode("cp1258") == education.legacy_form(text)


def test_tiny_population_still_writes(tmp_path):
    spec = SourceSpec(citizens=60, seed=3, defect_rate=0.01)
    sim = education.simulate(spec)
    education.write(tmp_path.as_uri(), sim, spec)
    assert sum(1 for _ in (tmp_path / "students").rglob("*.*")) == sim.tables["students"]["_file"].n_unique()


def test_source_file_and_default_target(monkeypatch, tmp_path):
    source = load_source(REPO / "dags" / "sources" / "education" / "education.yml")
    assert source.connection.engine == "files" and source.legacy_encoding == "cp1258"
    assert {t.contract for t in source.tables} == {f"education.{t}" for t in education.TABLES}
    assert all(t.incremental_column == "exported_at" for t in source.tables)
    monkeypatch.delenv("AIRFLOW_CONN_NDC_SRC_EDUCATION", raising=False)
    monkeypatch.setenv("NDC_DATA_DIR", str(tmp_path))
    target = education.default_target()
    assert target.startswith("file://") and education.drop_root(target) == tmp_path / "drops" / "ndc_src_education"
