"""Contracts of the education source (being written for issue 4)."""

CONTRACTS: tuple[type, ...] = ()
