"""Contracts of the taxation source (being written for issue 4)."""

CONTRACTS: tuple[type, ...] = ()
