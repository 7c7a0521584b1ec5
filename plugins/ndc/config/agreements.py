"""Consumer agencies (``dags/agencies/<name>.yml``: the agency's group role and its logins) and sharing agreements
(``dags/agreements/<id>.yml``: the consumer, the shared views with columns, masks and row filters, the legal purpose,
start and expiry), validated alone and against each other and the shared views' columns."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from ndc.config import files
from ndc.errors import ConfigError
from ndc.settings import get_settings


class AgencyUser(files.StrictConfig):
    login: str = Field(description="LOGIN role of a person or a service of the agency")
    statement_timeout: str = "30s"
    connection_limit: int = Field(default=5, ge=1, le=100)

    _login = field_validator("login")(files.check_identifier)

    @field_validator("statement_timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        number = value.rstrip("smin")
        if not number.isdigit() or value[len(number):] not in ("ms", "s", "min"):
            raise ValueError("expected a duration such as 500ms, 30s or 2min")
        return value


class Agency(files.StrictConfig):
    name: str
    full_name: str
    kind: Literal["ministry", "sector", "province"]
    current_province_code: str | None = None
    users: list[AgencyUser] = Field(min_length=1)
    path: Path | None = Field(default=None, exclude=True)

    _name = field_validator("name")(files.check_identifier)

    @model_validator(mode="after")
    def _logins(self) -> Agency:
        files.refuse_repeated([u.login for u in self.users], "a login is listed once")
        return self

    @property
    def group_role(self) -> str:
        return f"ndc_agency_{self.name}"

    @property
    def schema(self) -> str:
        return f"agency_{self.name}"


class ViewGrant(files.StrictConfig):
    shared: str = Field(description="the shared view (shared.<name>)")
    columns: list[str] = Field(min_length=1, description="columns granted as they are")
    masked: dict[str, Literal["pseudonym", "partial", "year"]] = Field(
        default_factory=dict, description="pseudonym (keyed HMAC), partial (last four characters) or year (a date "
                                          "generalised to its year)")
    row_filter: dict[str, str | list[str]] = Field(default_factory=dict,
                                                  description="column: value, or column: [values]")

    _shared = field_validator("shared")(files.check_identifier)

    @model_validator(mode="after")
    def _names(self) -> ViewGrant:
        files.identifiers([*self.columns, *self.masked, *self.row_filter])
        both = sorted(set(self.columns) & set(self.masked))
        if both:
            raise ValueError(f"columns both granted and masked: {', '.join(both)}")
        return self


class Agreement(files.StrictConfig):
    id: str
    consumer: str
    purpose: str = Field(min_length=10, description="the legal purpose and basis")
    purpose_allows_identifiers: bool = Field(
        default=False, description="the purpose allows unmasked personal identifiers (e.g. PIN)")
    quasi_identifiers_in_clear: list[str] = Field(
        default_factory=list, description="quasi-identifiers (name, birth date, sex, place) the purpose needs in clear "
                                          "beside a pseudonym: with them, agencies could join their masked data")
    purposes: list[str] = Field(
        default_factory=list, description="the request purposes (lower-case codes) a caller of the sharing service may "
                                          "name under this agreement; none: the agreement is read with SQL only")
    start: date
    expires: date
    views: list[ViewGrant] = Field(min_length=1)
    path: Path | None = Field(default=None, exclude=True)

    _ids = field_validator("id", "consumer")(files.check_identifier)

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: list[str]) -> list[str]:
        files.identifiers(value)
        files.refuse_repeated(value, "a purpose is listed once")
        return value

    @model_validator(mode="after")
    def _dates(self) -> Agreement:
        if self.expires <= self.start:
            raise ValueError("expires must be after start")
        files.refuse_repeated([v.shared for v in self.views], "a shared view may appear once per agreement")
        return self

    @property
    def content_sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path else ""


# Personal identifiers that must be masked (by pseudonym: `partial` shows the PIN's last digits, and its digits 4-6
# follow from birth date and sex) unless the purpose allows them.
IDENTIFIERS = {"citizen_id"}
# Columns that identify a person in combination: beside a pseudonym they let two agencies join their masked data.
QUASI_IDENTIFIERS = {"full_name", "birth_date", "death_date", "sex", "household_id", "historic_province_code",
                     "historic_province_name", "current_province_code", "current_province_name"}


def _load(path: Path, model: type[BaseModel], name_field: str) -> BaseModel:
    return files.load_config(path, model, model.__name__.lower(), name_field)


def load_agencies(directory: Path | None = None) -> dict[str, Agency]:
    """Every agency file; one ConfigError names every invalid one, and every login listed by two agencies (a login
    belongs to one agency)."""
    problems: list[str] = []
    found = {a.name: a for a in files.load_all(directory or agencies_dir(), lambda path: _load(path, Agency, "name"),
                                               problems)}
    owners: dict[str, Agency] = {}
    for agency in found.values():
        for n, user in enumerate(agency.users):
            other = owners.setdefault(user.login, agency)
            if other is not agency:
                problems.append(f"{agency.path}: field 'users.{n}.login': {user.login} is already a login of agency "
                                f"{other.name} ({other.path}): a login belongs to one agency")
    if problems:
        raise ConfigError("\n".join(problems))
    return found


def load_agreements(directory: Path | None = None, *, agencies: dict[str, Agency] | None = None,
                    shared: dict[str, list[str]] | None = None) -> dict[str, Agreement]:
    """Every agreement file, validated alone and against the agencies and the shared views' columns; one
    ConfigError names every problem of every file."""
    problems: list[str] = []
    found = {a.id: a for a in files.load_all(directory or agreements_dir(), lambda path: _load(path, Agreement, "id"),
                                       problems)}
    for agreement in found.values():
        problems += [f"{agreement.path}: {p}" for p in check_agreement(agreement, agencies, shared)]
    for pair in files.repeated([f"{a.consumer}|{v.shared}" for a in found.values() for v in a.views]):
        consumer, view = pair.split("|")
        problems.append(f"agency {consumer} has several agreements for shared.{view}: one per view and agency")
    if problems:
        raise ConfigError("\n".join(problems))
    return found


def check_agreement(agreement: Agreement, agencies: dict[str, Agency] | None,
                    shared: dict[str, list[str]] | None) -> list[str]:
    problems = []
    if agencies is not None and agreement.consumer not in agencies:
        problems.append(f"field 'consumer': no agency {agreement.consumer!r} (agencies: {', '.join(agencies)})")
    for n, view in enumerate(agreement.views):
        where = f"views.{n}"
        if shared is not None:
            if view.shared not in shared:
                problems.append(f"field '{where}.shared': no shared view {view.shared!r} "
                                f"(shared: {', '.join(shared)})")
                continue
            unknown = [c for c in [*view.columns, *view.masked, *view.row_filter] if c not in shared[view.shared]]
            if unknown:
                problems.append(f"field '{where}': shared.{view.shared} has no column {', '.join(unknown)}")
        exposed = sorted(IDENTIFIERS & set(view.columns))
        if exposed and not agreement.purpose_allows_identifiers:
            problems.append(f"field '{where}.columns': {', '.join(exposed)} is a personal identifier: mask it "
                            "(masked: {column: pseudonym}) unless purpose_allows_identifiers is true")
        partial = sorted(c for c in IDENTIFIERS if view.masked.get(c) == "partial")
        if partial:
            problems.append(f"field '{where}.masked': {', '.join(partial)} may not be masked 'partial' (its last "
                            "digits, with birth date and sex, narrow it to a few people): use pseudonym")
        problems += _joinable(agreement, view, where)
    return problems


def _joinable(agreement: Agreement, view: ViewGrant, where: str) -> list[str]:
    """A pseudonymised view showing quasi-identifiers in clear lets agencies join their masked data on them: each
    must be generalised (``year``), fixed by the row filter to one value, or allowed by the purpose."""
    if "pseudonym" not in view.masked.values():
        return []
    fixed = {c for c, v in view.row_filter.items() if not isinstance(v, list) or len(v) == 1}
    clear = sorted((QUASI_IDENTIFIERS & set(view.columns)) - fixed - set(agreement.quasi_identifiers_in_clear))
    if not clear:
        return []
    return [f"field '{where}.columns': {', '.join(clear)} beside a pseudonym: two agencies could join their masked "
            "data on these quasi-identifiers. Generalise them (masked: {birth_date: year}), leave them out, or list "
            "those the purpose needs in quasi_identifiers_in_clear"]


def agencies_dir() -> Path:
    return get_settings().agencies_dir


def agreements_dir() -> Path:
    return get_settings().agreements_dir
