"""Contracts of the enterprise source (being written for issue 4)."""

CONTRACTS: tuple[type, ...] = ()
