"""Fault injection: each scenario runs a real load, injects a fault where partial state exists (and asserts that
state before recovering, so a fault after completion cannot pass), recovers as an operator would (retry, rerun),
then proves the platform's promises: landing equals the source (SQL ``EXCEPT`` both ways, less the rows the
simulator's manifest sends to quarantine), no duplicate keys, every quarantined row has its reason, and the ledger
is consistent and verifies.

``ndc faults`` runs every scenario (or ``--only``) on fresh databases and prints one line per scenario: survived
or not, rows expected vs found. ``tests/lab/test_faults.py`` runs the same functions. Scenarios register themselves
with :func:`scenario` in the modules listed in :data:`MODULES`.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

MODULES = ("ndc_lab.faults.extract_load", "ndc_lab.faults.conform_publish")


@dataclass
class Outcome:
    """What a scenario proved. ``survived`` only when every promise held after recovery."""

    scenario: str
    title: str
    survived: bool
    expected_rows: int
    found_rows: int
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "survived" if self.survived else "NOT SURVIVED"
        text = (f"{self.scenario:>2}  {verdict:<12}  rows expected {self.expected_rows:>9,} found "
                f"{self.found_rows:>9,}  {self.seconds:6.1f} s  {self.title}")
        return text + "".join(f"\n      - {p}" for p in self.problems)


@dataclass(frozen=True)
class Scenario:
    number: str
    title: str
    run: Callable[[str], Outcome]  # takes the PostgreSQL server URL (…/postgres); makes and drops its databases


_REGISTRY: dict[str, Scenario] = {}


def scenario(number: str, title: str) -> Callable[[Callable[[str], Outcome]], Callable[[str], Outcome]]:
    """Register ``run(server_url) -> Outcome`` as scenario ``number``."""

    def register(run: Callable[[str], Outcome]) -> Callable[[str], Outcome]:
        if number in _REGISTRY:
            raise ValueError(f"fault scenario {number} registered twice ({_REGISTRY[number].run.__module__})")
        _REGISTRY[number] = Scenario(number, title, run)
        return run

    return register


def scenarios() -> dict[str, Scenario]:
    for name in MODULES:
        importlib.import_module(name)
    return dict(sorted(_REGISTRY.items(), key=lambda item: (len(item[0]), item[0])))


def run_one(chosen: Scenario, server_url: str) -> Outcome:
    """Run a scenario; an exception is a scenario that did not survive (with its traceback's last lines)."""
    started = time.monotonic()
    try:
        outcome = chosen.run(server_url)
    except Exception as exc:  # the summary reports it; tests re-raise through the outcome's problems
        tail = traceback.format_exc().strip().splitlines()[-6:]
        outcome = Outcome(chosen.number, chosen.title, False, 0, 0,
                          problems=[f"{type(exc).__name__}: {exc}"[:2000], *tail])
    finally:
        from ndc_lab.faults.common import stop_spawned

        stop_spawned()  # whatever a failed scenario left running
    outcome.seconds = time.monotonic() - started
    return outcome
