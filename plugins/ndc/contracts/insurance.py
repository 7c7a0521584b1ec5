"""Contracts of the insurance source (being written for issue 4)."""

CONTRACTS: tuple[type, ...] = ()
