"""Exceptions of the platform. Each message names what to fix: file, field, source, table, column."""


class NdcError(Exception):
    """Base class: an error the platform explains to its user."""


class ConfigError(NdcError):
    """A configuration file or setting is invalid."""


class SchemaDriftError(NdcError):
    """The source's columns no longer match the contract: the hand-off is blocked, nothing is loaded."""


class LedgerError(NdcError):
    """The ledger chain does not verify."""
