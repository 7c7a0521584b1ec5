"""A generated national configuration: a DAG bundle of thousands of sources of ~95 owner agencies (the seed's ~3,000
shared databases of 95 agencies), for the scale test and ``ndc bench scale``.

Each generated source is one of the five shipped source files (a small real source: the demo's databases and drop
folder) under a new name, in its agency's folder, with its own pool and a staggered schedule: extracts are spread
evenly over the day (and full compares over the week), so no minute starts more than its share. Agency folders and
their DAG files come from the scaffold (:mod:`ndc.config.scaffold`), exactly as ``ndc sources new`` writes them. The
platform's other DAG files (conform, exchanges, maintenance) and their YAML folders are copied beside them.
"""

from __future__ import annotations

import csv
import random
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from ndc.config.scaffold import agency_dag_file, agency_slug

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = ("population", "taxation", "insurance", "enterprise", "education")
# Ministries and ministry-level agencies (2025), sectors, then the 34 provinces; numbered departments fill the rest.
CENTRAL = (
    "Bộ Công an", "Bộ Quốc phòng", "Bộ Ngoại giao", "Bộ Nội vụ", "Bộ Tư pháp", "Bộ Tài chính", "Bộ Công Thương",
    "Bộ Nông nghiệp và Môi trường", "Bộ Xây dựng", "Bộ Văn hoá, Thể thao và Du lịch", "Bộ Khoa học và Công nghệ",
    "Bộ Giáo dục và Đào tạo", "Bộ Y tế", "Bộ Dân tộc và Tôn giáo", "Ngân hàng Nhà nước Việt Nam",
    "Thanh tra Chính phủ", "Văn phòng Chính phủ", "Bảo hiểm xã hội Việt Nam", "Toà án nhân dân tối cao",
    "Viện kiểm sát nhân dân tối cao", "Kiểm toán nhà nước", "Thông tấn xã Việt Nam", "Đài Truyền hình Việt Nam",
    "Đài Tiếng nói Việt Nam", "Học viện Chính trị quốc gia Hồ Chí Minh", "Viện Hàn lâm Khoa học xã hội Việt Nam",
    "Viện Hàn lâm Khoa học và Công nghệ Việt Nam", "Uỷ ban Quản lý vốn nhà nước tại doanh nghiệp",
)
NON_PY = ("exchanges", "agreements", "agencies")  # YAML folders the copied DAG files read


@dataclass(frozen=True)
class National:
    dags: Path
    sources: int
    agencies: int
    dag_files: int
    expected_dags: int          # extract DAGs + compare DAGs + the platform's other DAGs


def agency_names(count: int) -> list[str]:
    provinces = sorted({row["new_name"] for row in csv.DictReader(
        (REPO / "plugins" / "ndc" / "reference" / "provinces_2025.csv").open(encoding="utf-8"))})
    names = [*CENTRAL, *(f"UBND tỉnh {p}" for p in provinces)]
    names += [f"Cục chuyên ngành {i:02d}" for i in range(1, max(0, count - len(names)) + 1)]
    return names[:count]


def _shares(total: int, parts: int, rng: random.Random) -> list[int]:
    """``total`` split into ``parts`` uneven shares (each at least 1, none over twice the mean)."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(parts)]
    raw = [max(1, int(total * w / sum(weights))) for w in weights]
    for i in range(total - sum(raw)):
        raw[i % parts] += 1
    while sum(raw) > total:
        raw[raw.index(max(raw))] -= 1
    return raw


def _cron(slot: int, slots: int) -> str:
    minute = slot * 1440 // slots
    return f"{minute % 60} {minute // 60} * * *"


def _weekly(slot: int, slots: int) -> str:
    minute = slot * 7 * 1440 // slots
    day, rest = divmod(minute, 1440)
    return f"{rest % 60} {rest // 60} * * {day}"


def generate(out: Path, sources: int = 3000, agencies: int = 95, *, seed: int = 19,
             start_date: date | None = None) -> National:
    """Write the bundle under ``out/dags`` (replacing it). ``start_date``: every source's (default: the templates')
    — the bench sets yesterday, so a day's runs are what the scheduler has to create."""
    dags = out / "dags"
    if dags.exists():
        shutil.rmtree(dags)
    (dags / "sources").mkdir(parents=True)
    for name in ("conform.py", "exchanges.py", "maintenance.py"):
        shutil.copy(REPO / "dags" / name, dags / name)
    for folder in NON_PY:
        if (REPO / "dags" / folder).is_dir():
            shutil.copytree(REPO / "dags" / folder, dags / folder)
    templates = {t: yaml.safe_load(next((REPO / "dags" / "sources").glob(f"*/{t}.yml")).read_text(encoding="utf-8"))
                 for t in TEMPLATES}
    rng = random.Random(seed)  # noqa: S311 - shares of a test configuration, not a secret
    agencies = min(agencies, sources)
    names = agency_names(agencies)
    counts = _shares(sources, agencies, rng)
    slot, compares = 0, 0
    for number, (owner, count) in enumerate(zip(names, counts, strict=True), start=1):
        agency = f"a{number:02d}_{agency_slug(owner)}"[:40].rstrip("_")
        folder = dags / "sources" / agency
        folder.mkdir()
        dag_file, text = agency_dag_file(agency, dags)
        dag_file.parent.mkdir(exist_ok=True)
        dag_file.write_text(text, encoding="utf-8")
        for n in range(1, count + 1):
            template = TEMPLATES[slot % len(TEMPLATES)]
            config = dict(templates[template])
            name = f"{template}_a{number:02d}_{n:03d}"
            config.update(name=name, owner_agency=owner, schedule=_cron(slot, sources),
                          description=f"{config['description'].strip()} (generated copy {name} of {owner})")
            if start_date is not None:
                config["start_date"] = start_date.isoformat()
            if config["connection"]["engine"] in ("postgresql", "mysql"):
                config["full_compare_schedule"] = _weekly(slot, sources)
                compares += 1
            (folder / f"{name}.yml").write_text(
                f"# Generated by ndc_lab.national from {template}.yml: a small real source under a new name.\n"
                + yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
            slot += 1
    platform_dags = 4  # conform, the exchange of dags/exchanges, purge_personal_data, collect_consumer_reads
    return National(dags=dags, sources=sources, agencies=agencies, dag_files=agencies + 3,
                    expected_dags=sources + compares + platform_dags)
