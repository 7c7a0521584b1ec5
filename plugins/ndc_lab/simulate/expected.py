"""What the platform owes the five simulated sources, worked out from the simulations alone (their tables, defect
manifests and crosswalks) and the reference province mapping, never from landing or the dbt models: tests compare
the shared views with these frames.

- :func:`landed_rows` / :func:`current_rows`: a table as landing should hold it: the source's rows less those the
  manifest quarantines and less the losing versions it supersedes (its ``row_version``), text in NFC (a repair);
  current rows also less those deleted at the source (tombstone column).
- :func:`citizens`, :func:`enterprises`, :func:`province_statistics`: the rows of the shared views of the same names,
  by the rules their contracts describe (a record counts in the province its historic code belongs to today).
- :func:`person_records`: every current person record of the other four sources with the PIN it records and the PIN
  of the citizen it really is (crosswalks); :func:`linkable` says which the authorities' rule can link.
- :func:`reference_exceptions`: every current record whose reference to another table finds no current row there.
"""

from __future__ import annotations

import unicodedata
from datetime import date

import polars as pl

from ndc.config.sources import TableConfig, find_source
from ndc.reference import current_code_of, province_mappings
from ndc.settings import get_settings
from ndc_lab.simulate.corpus import tables_of

VIETNAM = "Asia/Ho_Chi_Minh"
FIRST_MONTH = date(2024, 7, 1)  # shared.province_statistics starts with July 2024 (the first simulated updates)
FIGURES = ("population", "births", "deaths", "moves_in", "moves_out", "enterprises_opened", "enterprises_closed",
           "taxpayers_registered", "insured_workers", "students")

# (source, table, referring column, target table, target key, the reason an orphan is listed under)
REFERENCES = (
    ("population", "citizens", "household_id", "households", "household_id", "household_not_found"),
    ("population", "households", "head_pin", "citizens", "pin", "head_citizen_not_found"),
    ("population", "residence_changes", "pin", "citizens", "pin", "citizen_not_found"),
    ("taxation", "filings", "taxpayer_id", "taxpayers", "taxpayer_id", "taxpayer_not_found"),
    ("taxation", "payments", "taxpayer_id", "taxpayers", "taxpayer_id", "taxpayer_not_found"),
    ("insurance", "contributions", "insurance_code", "insured_people", "insurance_code", "insured_person_not_found"),
    ("enterprise", "branches", "enterprise_code", "enterprises", "enterprise_code", "enterprise_not_found"),
    ("education", "enrolments", "student_id", "students", "student_id", "student_not_found"),
    ("education", "enrolments", "school_id", "schools", "school_id", "school_not_found"),
)

Sims = dict[str, object]


def table_config(source: str, table: str) -> TableConfig:
    return find_source(get_settings().sources_dir, source).table(table)


def record_key(columns: list[str]) -> pl.Expr:
    """The key as the manifest and quarantine write it: text values joined with '|'."""
    return pl.concat_str([pl.col(c).cast(pl.String) for c in columns], separator="|", ignore_nulls=True)


def landed_rows(sims: Sims, source: str, table: str) -> pl.DataFrame:
    """The rows landing should hold for ``source.table`` (deleted ones included), one per key, with ``_key``."""
    sim, cfg = sims[source], table_config(source, table)
    frame = tables_of(sim)[table]
    frame = frame.drop([c for c in frame.columns if c.startswith("_")])
    if frame.schema.get("birth_date") == pl.String:  # education's CSV text; an impossible date is quarantined
        frame = frame.with_columns(pl.col("birth_date").str.to_date(strict=False))
    manifest = sim.manifest.filter(pl.col("table_name") == table)
    quarantined = manifest.filter(pl.col("expected_outcome") == "quarantined")["record_key"]
    losers = manifest.filter(pl.col("expected_outcome") == "superseded").select(
        pl.col("record_key").alias("_key"), pl.col("row_version").alias(cfg.incremental_column),
        pl.lit(True).alias("_loser"))
    rows = (frame.with_columns(record_key(cfg.primary_key).alias("_key"))
            .filter(~pl.col("_key").is_in(quarantined.implode()))
            .join(losers, on=["_key", cfg.incremental_column], how="left", nulls_equal=False)
            .filter(pl.col("_loser").is_null()).drop("_loser"))
    repeated = rows.filter(pl.col("_key").is_duplicated())["_key"].unique().sort()
    if repeated.len():
        raise ValueError(f"{source}.{table}: keys with several versions the manifest does not supersede: "
                         f"{repeated.head(5).to_list()}")
    text = [c for c, kind in rows.schema.items() if kind == pl.String and c != "_key"]
    return rows.with_columns(pl.col(c).str.normalize("NFC") for c in text)


def current_rows(sims: Sims, source: str, table: str) -> pl.DataFrame:
    """Landed rows not deleted at the source: what the staging models read."""
    rows = landed_rows(sims, source, table)
    tombstone = table_config(source, table).tombstone_column
    return rows.filter(pl.col(tombstone).is_null()) if tombstone else rows


def _mapping() -> pl.DataFrame:
    return pl.DataFrame([(m.old_code, m.new_code, m.new_name) for m in province_mappings()],
                        schema=["province_code", "current_province_code", "current_province_name"], orient="row")


def _current_code(column: str) -> pl.Expr:
    return pl.col(column).replace_strict(current_code_of(), default=None)


def _month(column: str) -> pl.Expr:
    return pl.col(column).dt.truncate("1mo")


def _vietnam_date(column: str) -> pl.Expr:
    return pl.col(column).dt.convert_time_zone(VIETNAM).dt.date()


def citizens(sims: Sims) -> pl.DataFrame:
    """shared.citizens without the activity columns: every current citizen, the winning version of a duplicate key,
    names trimmed NFC, the historic code and the current province it belongs to, and whether the household is one
    that landed (an orphan reference is flagged, never dropped)."""
    households = current_rows(sims, "population", "households")["household_id"].implode()
    rows = current_rows(sims, "population", "citizens").join(_mapping(), on="province_code", how="left")
    return rows.select(
        pl.col("pin").alias("citizen_id"),
        pl.col("full_name").str.strip_chars(" "), "birth_date", "death_date", "sex", "ethnicity", "household_id",
        pl.col("household_id").is_in(households).alias("has_registered_household"),
        pl.col("province_code").alias("historic_province_code"), "current_province_code", "current_province_name",
        _vietnam_date("updated_at").alias("residence_recorded_on"), pl.col("updated_at").alias("source_updated_at"),
    ).sort("citizen_id")


def name_key(name: str | None) -> str | None:
    """A full name as the authorities compare it: NFC, single spaces, lower case."""
    if name is None:
        return None
    return " ".join(unicodedata.normalize("NFC", name).split()).lower() or None


def person_records(sims: Sims) -> pl.DataFrame:
    """(source_name, dataset, record_key, recorded_pin, true_pin) for every current person record held outside the
    population database: individual taxpayers, insured people, students, legal representatives."""
    tax, ins, edu, ent = (sims[s] for s in ("taxation", "insurance", "education", "enterprise"))
    by_legacy = tax.crosswalks["legacy_tax_code_to_pin"].rename({"pin": "by_legacy"})
    pin_key = pl.when(pl.col("taxpayer_id").str.len_chars() == 12).then("taxpayer_id")
    taxpayers = (current_rows(sims, "taxation", "taxpayers").filter(pl.col("taxpayer_kind") == "individual")
                 .join(by_legacy, on="legacy_tax_code", how="left")
                 .select(pl.lit("taxation").alias("source_name"), pl.lit("taxpayers").alias("dataset"),
                         pl.col("taxpayer_id").alias("record_key"), pl.coalesce("pin", pin_key).alias("recorded_pin"),
                         pl.coalesce("by_legacy", pin_key).alias("true_pin")))
    insured = (current_rows(sims, "insurance", "insured_people")
               .join(ins.crosswalks["insurance_code_to_pin"].rename({"pin": "true_pin"}), on="insurance_code",
                     how="left")
               .select(pl.lit("insurance").alias("source_name"), pl.lit("insured_people").alias("dataset"),
                       pl.col("insurance_code").alias("record_key"), pl.col("pin").alias("recorded_pin"), "true_pin"))
    students = (current_rows(sims, "education", "students")
                .join(edu.crosswalks["student_to_pin"].rename({"pin": "true_pin"}), on="student_id", how="left")
                .select(pl.lit("education").alias("source_name"), pl.lit("students").alias("dataset"),
                        pl.col("student_id").alias("record_key"), pl.col("pin").alias("recorded_pin"), "true_pin"))
    representatives = (current_rows(sims, "enterprise", "legal_representatives")
                       .join(ent.crosswalks["representative_pins"].rename({"recorded_pin": "pin"}),
                             on=["enterprise_code", "pin"], how="left")
                       .select(pl.lit("enterprise").alias("source_name"),
                               pl.lit("legal_representatives").alias("dataset"), pl.col("_key").alias("record_key"),
                               pl.col("pin").alias("recorded_pin"), "true_pin"))
    return pl.concat([taxpayers, insured, students, representatives])


def manifest_exceptions(sims: Sims) -> pl.DataFrame:
    """(source_name, dataset, record_key, kind) of every defect whose expected outcome is ``exception``."""
    return pl.concat([sim.manifest.filter(pl.col("expected_outcome") == "exception").select(
        pl.lit(source).alias("source_name"), pl.col("table_name").alias("dataset"), "record_key", "kind")
        for source, sim in sims.items()])


def linkable(sims: Sims, records: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    """``records`` with ``is_linkable``: the true citizen is current, the record is no injected exception, and it
    either records the true PIN or carries none while its citizen is the only one with that name and birth date."""
    keyed = people.select("citizen_id", "birth_date",
                          pl.col("full_name").map_elements(name_key, return_dtype=pl.String).alias("name_key"))
    namesakes = keyed.group_by("name_key", "birth_date").len("namesakes")
    unique = keyed.join(namesakes, on=["name_key", "birth_date"]).filter(pl.col("namesakes") == 1)["citizen_id"]
    excepted = manifest_exceptions(sims).select("dataset", "record_key", pl.lit(True).alias("_excepted"))
    return records.join(excepted, on=["dataset", "record_key"], how="left").with_columns(
        (pl.col("true_pin").is_in(people["citizen_id"].implode()) & pl.col("_excepted").is_null()
         & ((pl.col("recorded_pin") == pl.col("true_pin")).fill_null(False)
            | (pl.col("recorded_pin").is_null() & pl.col("true_pin").is_in(unique.implode()))))
        .alias("is_linkable")).drop("_excepted")


ACTIVITY = ("is_tax_registered", "tax_filings", "last_tax_filed_on", "is_insured", "contributing_months",
            "highest_enrolled_grade", "highest_enrolled_school_year")


def citizen_activity(sims: Sims, linked: pl.DataFrame) -> pl.DataFrame:
    """shared.citizens' activity columns for every current citizen, through the person records ``linked`` to them
    (``dataset``, ``record_key``, ``true_pin``): tax registration and filings, insurance and months contributed,
    the highest grade enrolled in (the later school year on a tie)."""
    def records(dataset: str, key: str) -> pl.DataFrame:
        return linked.filter(pl.col("dataset") == dataset).select(pl.col("record_key").alias(key),
                                                                  pl.col("true_pin").alias("citizen_id"))

    taxpayers, insured = records("taxpayers", "taxpayer_id"), records("insured_people", "insurance_code")
    filings = current_rows(sims, "taxation", "filings").join(taxpayers, on="taxpayer_id").group_by("citizen_id").agg(
        pl.len().alias("tax_filings"), pl.col("filed_on").max().alias("last_tax_filed_on"))
    months = current_rows(sims, "insurance", "contributions").join(insured, on="insurance_code").group_by(
        "citizen_id").agg(pl.col("contribution_month").n_unique().alias("contributing_months"))
    grades = (current_rows(sims, "education", "enrolments").join(records("students", "student_id"), on="student_id")
              .sort("grade", "school_year", descending=True).group_by("citizen_id", maintain_order=True).first()
              .select("citizen_id", pl.col("grade").alias("highest_enrolled_grade"),
                      pl.col("school_year").alias("highest_enrolled_school_year")))
    found = citizens(sims).select("citizen_id").with_columns(
        pl.col("citizen_id").is_in(taxpayers["citizen_id"].implode()).alias("is_tax_registered"),
        pl.col("citizen_id").is_in(insured["citizen_id"].implode()).alias("is_insured"))
    for frame in (filings, months, grades):
        found = found.join(frame, on="citizen_id", how="left")
    return found.with_columns(pl.col(c).fill_null(0).cast(pl.Int64) for c in ("tax_filings", "contributing_months")
                              ).select("citizen_id", *ACTIVITY).sort("citizen_id")


def reference_exceptions(sims: Sims) -> pl.DataFrame:
    """(source_name, dataset, record_key, exception_reason) of every current record whose reference finds no current
    row of the table it names (the injected orphans, and references to rows the gate quarantined)."""
    found = []
    for source, table, column, target, target_key, reason in REFERENCES:
        known = current_rows(sims, source, target)[target_key].implode()
        orphans = current_rows(sims, source, table).filter(pl.col(column).is_not_null()
                                                           & ~pl.col(column).is_in(known))
        found.append(orphans.select(pl.lit(source).alias("source_name"), pl.lit(table).alias("dataset"),
                                    pl.col("_key").alias("record_key"), pl.lit(reason).alias("exception_reason")))
    return pl.concat(found)


def enterprises(sims: Sims) -> pl.DataFrame:
    """shared.enterprises' register and activity columns: every current enterprise with its status events, open
    branches, tax filings and insured employees, by its historic and current province."""
    codes = current_rows(sims, "enterprise", "enterprises")

    def per_enterprise(source: str, table: str, column: str, name: str) -> pl.DataFrame:
        return current_rows(sims, source, table).group_by(pl.col(column).alias("enterprise_code")).len(name)

    found = codes.join(_mapping(), on="province_code", how="left").select(
        "enterprise_code", pl.col("name").str.strip_chars(" ").alias("enterprise_name"), "legal_form", "registered_on",
        "status", pl.col("province_code").alias("historic_province_code"), "current_province_code",
        "current_province_name", pl.col("updated_at").alias("source_updated_at"))
    for source, table, column, name in (("enterprise", "status_history", "enterprise_code", "status_events"),
                                        ("enterprise", "branches", "enterprise_code", "open_branches"),
                                        ("taxation", "filings", "taxpayer_id", "tax_filings"),
                                        ("insurance", "insured_people", "employer_code", "insured_employees")):
        found = found.join(per_enterprise(source, table, column, name), on="enterprise_code", how="left")
    counts = ["status_events", "open_branches", "tax_filings", "insured_employees"]
    return found.with_columns(pl.col(c).fill_null(0).cast(pl.Int64) for c in counts).sort("enterprise_code")


def _counted(frame: pl.DataFrame, name: str, distinct: str | None = None) -> pl.DataFrame:
    """Rows (or distinct values of ``distinct``) per current province and month."""
    grouped = frame.filter(pl.col("current_province_code").is_not_null()).group_by("current_province_code", "month")
    return grouped.agg((pl.col(distinct).n_unique() if distinct else pl.len()).alias(name))


def _population(people: pl.DataFrame, months: pl.Series) -> pl.DataFrame:
    """Living residents at each month's end: born in or before the month, not dead by its end."""
    grid = people.select("current_province_code", _month("birth_date").alias("born"), _month("death_date")
                         .alias("died")).join(pl.DataFrame({"month": months}), how="cross")
    alive = grid.filter((pl.col("born") <= pl.col("month"))
                        & (pl.col("died").is_null() | (pl.col("died") > pl.col("month"))))
    return _counted(alive, "population")


def _moves(sims: Sims) -> tuple[pl.DataFrame, pl.DataFrame]:
    changes = current_rows(sims, "population", "residence_changes").select(
        _current_code("from_province_code").alias("from_code"), _current_code("to_province_code").alias("to_code"),
        _month("moved_on").alias("month"))
    moves = changes.filter(pl.col("from_code").is_not_null() & pl.col("to_code").is_not_null()
                           & (pl.col("from_code") != pl.col("to_code")))
    return (_counted(moves.rename({"to_code": "current_province_code"}), "moves_in"),
            _counted(moves.rename({"from_code": "current_province_code"}), "moves_out"))


def _enterprise_figures(sims: Sims) -> tuple[pl.DataFrame, pl.DataFrame]:
    registered = current_rows(sims, "enterprise", "enterprises").select(
        "enterprise_code", _current_code("province_code").alias("current_province_code"),
        _month("registered_on").alias("month"))
    dissolved = (current_rows(sims, "enterprise", "status_history").filter(pl.col("status") == "dissolved")
                 .select("enterprise_code", _month("effective_on").alias("month"))
                 .join(registered.drop("month"), on="enterprise_code"))
    return _counted(registered, "enterprises_opened"), _counted(dissolved, "enterprises_closed", "enterprise_code")


def _insured_workers(sims: Sims) -> pl.DataFrame:
    insured = current_rows(sims, "insurance", "insured_people").select(
        "insurance_code", _current_code("province_code").alias("current_province_code"))
    paid = current_rows(sims, "insurance", "contributions").select(
        "insurance_code", pl.col("contribution_month").alias("month")).join(insured, on="insurance_code")
    return _counted(paid, "insured_workers", "insurance_code")


def _students(sims: Sims, months: pl.Series) -> pl.DataFrame:
    """Distinct students enrolled in a school of the province, in every month of the school year (July to June)."""
    schools = current_rows(sims, "education", "schools").select(
        "school_id", _current_code("province_code").alias("current_province_code"))
    enrolled = current_rows(sims, "education", "enrolments").join(schools, on="school_id").with_columns(
        pl.date(pl.col("school_year").str.slice(0, 4).cast(pl.Int32), 7, 1).alias("year_start"))
    in_year = enrolled.join(pl.DataFrame({"month": months}), how="cross").filter(
        (pl.col("year_start") <= pl.col("month")) & (pl.col("month") < pl.col("year_start").dt.offset_by("1y")))
    return _counted(in_year, "students", "student_id")


def province_statistics(sims: Sims) -> pl.DataFrame:
    """shared.province_statistics: per current province (34) and month, from July 2024 to the month of the latest
    citizen record."""
    people = citizens(sims)
    last = max(FIRST_MONTH, people["residence_recorded_on"].max().replace(day=1))
    months = pl.date_range(FIRST_MONTH, last, "1mo", eager=True).alias("month")
    provinces = _mapping().select("current_province_code", "current_province_name").unique()
    spine = provinces.join(pl.DataFrame({"month": months}), how="cross")
    taxpayers = current_rows(sims, "taxation", "taxpayers").select(
        _current_code("province_code").alias("current_province_code"), _month("registered_on").alias("month"))
    born = people.select("current_province_code", _month("birth_date").alias("month"))
    died = people.filter(pl.col("death_date").is_not_null()).select("current_province_code",
                                                                     _month("death_date").alias("month"))
    figures = [_population(people, months), _counted(born, "births"), _counted(died, "deaths"), *_moves(sims),
               *_enterprise_figures(sims), _counted(taxpayers, "taxpayers_registered"), _insured_workers(sims),
               _students(sims, months)]
    for frame in figures:
        spine = spine.join(frame, on=["current_province_code", "month"], how="left")
    return spine.with_columns(pl.col(c).fill_null(0).cast(pl.Int64) for c in FIGURES).sort(
        "current_province_code", "month")


__all__ = ["ACTIVITY", "FIGURES", "REFERENCES", "citizen_activity", "citizens", "current_rows", "enterprises",
           "landed_rows", "linkable", "manifest_exceptions", "name_key", "person_records", "province_statistics",
           "record_key", "reference_exceptions", "table_config"]
