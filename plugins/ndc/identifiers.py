"""Identifiers that come from configuration are validated here and always quoted with ``sql.Identifier``."""

from __future__ import annotations

import re

from psycopg import sql

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def is_identifier(name: str) -> bool:
    return bool(_IDENT.match(name))


def ident(*parts: str) -> sql.Identifier:
    """A quoted (possibly schema-qualified) identifier; every part must be a plain lower-case name."""
    for part in parts:
        if not is_identifier(part):
            raise ValueError(f"not a valid identifier: {part!r} (expected lower-case letters, digits, _)")
    return sql.Identifier(*parts)


def column_list(columns: list[str], prefix: str | None = None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(ident(c) for c in columns)
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(ident(prefix), ident(c)) for c in columns)
