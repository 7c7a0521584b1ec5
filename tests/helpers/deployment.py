"""A warehouse with the deployment's role layout (fixtures registered by ``tests/conftest.py``): bootstrapped by
the database administrator (the test server's superuser, as ``ndc warehouse bootstrap`` runs in the compose
deployment), the platform running as a runtime role without CREATEROLE or CREATEDB, the ledger anchored by an
INSERT-only writer, an approver login and the sharing service's login."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from ndc_lab.environment import restore, snapshot
from ndc_lab.simulate.all_sources import five_sources
from ndc_lab.simulate.common import SourceSpec

from ndc.config.agreements import Agency, Agreement, load_agencies, load_agreements
from ndc.conform import dbt
from ndc.sharing.agreements import ApplyResult, apply, approve
from ndc.warehouse import database
from ndc.warehouse.bootstrap import bootstrap, bootstrap_anchor
from ndc.warehouse.connections import with_database, with_user
from ndc.warehouse.database import drop_database
from tests.helpers import REPO
from tests.helpers.conform import build_and_publish

ENVIRONMENT = ("NDC_WAREHOUSE_URL", "NDC_LEDGER_ANCHOR_URL", "NDC_APPROVER_URL", "NDC_ADMIN_URL")


@dataclass
class Deployment:
    admin: str  # the database administrator on the warehouse (tests use it to look, never the code under test)
    runtime: str  # the platform's runtime role on the warehouse
    runtime_role: str
    approver: str
    approver_role: str
    anchor: str
    service: str  # the sharing service's login (a member of ndc_service)
    run: str

    def login(self, role: str) -> str:
        return with_user(self.admin, role)


@pytest.fixture(scope="session")
def deployment(pg_server: str) -> Iterator[Deployment]:
    run = uuid.uuid4().hex[:8]
    name = f"ndc_sec_{run}"
    admin = with_database(pg_server, name)
    runtime_role, writer, approver_role = f"ndc_rt_{run}", f"ndc_aw_{run}", f"ndc_ap_{run}"
    service_role = f"ndc_sv_{run}"
    found = Deployment(admin=admin, runtime=with_user(admin, runtime_role), runtime_role=runtime_role,
                       approver=with_user(admin, approver_role), approver_role=approver_role,
                       anchor=with_user(with_database(pg_server, f"{name}_ledger_anchor"), writer),
                       service=with_user(admin, service_role), run=run)
    bootstrap(pg_server, found.runtime, found.service)
    bootstrap_anchor(pg_server, found.anchor)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create role "{approver_role}" login in role ndc_approver')
        conn.execute(f'grant connect on database "{name}" to "{approver_role}"')
    try:
        yield found
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            logins = [r[0] for r in conn.execute("select role from ndc_meta.agency_roles where kind = 'login'")]
        drop_database(admin)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for role in (runtime_role, writer, approver_role, service_role, *logins):
                conn.execute(f'drop role if exists "{role}"')


SPEC = SourceSpec(citizens=600, seed=2121, defect_rate=0.002)


@contextmanager
def environment_of(deployment: Deployment) -> Iterator[Deployment]:
    """The platform's environment pointed at ``deployment`` (its runtime role, anchor writer and approver; no
    administrator), as it was before afterwards: tests of other packages never see it."""
    saved = snapshot(ENVIRONMENT)
    os.environ.update({"NDC_WAREHOUSE_URL": deployment.runtime, "NDC_LEDGER_ANCHOR_URL": deployment.anchor,
                       "NDC_APPROVER_URL": deployment.approver})
    os.environ.pop("NDC_ADMIN_URL", None)
    try:
        yield deployment
    finally:
        restore(saved)


@pytest.fixture(scope="session")
def built(deployment: Deployment, mariadb_server: str, tmp_path_factory) -> Deployment:
    """The five sources extracted, conformed and published by the runtime role (a real `dbt build` and publish):
    the deployment's layout runs the platform, not only the attacks. Built once per session."""
    with environment_of(deployment), five_sources(deployment.admin, SPEC, run=deployment.run,
                                                   drops=tmp_path_factory.mktemp("drops"), mariadb_url=mariadb_server):
        dbt.parse()
        build_and_publish("security")
    return deployment


@pytest.fixture(scope="module")
def published(built: Deployment) -> Iterator[Deployment]:
    """The published deployment, with the module's environment pointed at it."""
    with environment_of(built) as deployment:
        yield deployment


@dataclass
class Sharing:
    """The repository's agencies (logins suffixed) and agreements (dated around today), in a folder of a test's."""
    deployment: Deployment
    agencies_dir: Path
    agreements_dir: Path
    logins: dict[str, list[str]]

    def load(self) -> tuple[dict[str, Agency], dict[str, Agreement]]:
        agencies = load_agencies(self.agencies_dir)
        return agencies, load_agreements(self.agreements_dir, agencies=agencies, shared=dbt.shared_models())

    def approve(self, *ids: str) -> None:
        agencies, agreements = self.load()
        for agreement_id in ids or agreements:
            agreement = agreements[agreement_id]
            approve(self.deployment.approver, agreement, agencies[agreement.consumer], note="test")

    def apply(self) -> ApplyResult:
        agencies, agreements = self.load()
        with database.connect(self.deployment.runtime) as conn:
            return apply(conn, self.deployment.runtime, agencies=agencies, agreements=agreements)

    def login(self, agency: str, n: int = 0) -> str:
        return self.deployment.login(self.logins[agency][n])


def sharing_in(deployment: Deployment, folder: Path, tag: str) -> Sharing:
    """Agencies ``<name>`` of the repository as ``<name>_<tag>`` (so each test module has its own roles), and the
    repository's agreements for them, valid from a year ago to a year ahead."""
    agencies_dir, agreements_dir = folder / "agencies", folder / "agreements"
    agencies_dir.mkdir()
    agreements_dir.mkdir()
    logins: dict[str, list[str]] = {}
    for path in sorted((REPO / "dags/agencies").glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        data["name"] = name = f"{data['name']}_{tag}"
        for user in data["users"]:
            user["login"] = f"{user['login']}_{tag}_{deployment.run}"
            logins.setdefault(name, []).append(user["login"])
        (agencies_dir / f"{name}.yml").write_text(yaml.safe_dump(data, allow_unicode=True))
    today = date.today()
    for path in sorted((REPO / "dags/agreements").glob("*.yml")):
        text = re.sub(r"^start: .*$", f"start: {today - timedelta(days=365)}", path.read_text(), flags=re.M)
        text = re.sub(r"^expires: .*$", f"expires: {today + timedelta(days=365)}", text, flags=re.M)
        text = re.sub(r"^consumer: (.*)$", rf"consumer: \1_{tag}", text, flags=re.M)
        text = re.sub(r"^id: (.*)$", rf"id: \1_{tag}", text, flags=re.M)
        (agreements_dir / f"{path.stem}_{tag}.yml").write_text(text)
    return Sharing(deployment, agencies_dir, agreements_dir, logins)
