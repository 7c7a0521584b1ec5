"""Environment variables a simulation, a scenario or a test sets for a while, and puts back as they were."""

from __future__ import annotations

import os
from collections.abc import Iterable


def snapshot(names: Iterable[str]) -> dict[str, str | None]:
    """The current values of ``names`` (None: unset), for :func:`restore`."""
    return {name: os.environ.get(name) for name in names}


def restore(saved: dict[str, str | None]) -> None:
    """Put every variable of a :func:`snapshot` back: its old value, or unset when it was."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
