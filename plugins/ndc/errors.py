"""Exceptions of the platform. Each message names what to fix: file, field, source, table, column."""


class NdcError(Exception):
    """Base class: an error the platform explains to its user. ``summary``, when given, is what the ledger and
    alerts keep instead of the message: the message may quote a source's own text (a parse error, an API's body),
    which can hold row values."""

    def __init__(self, *args: object, summary: str | None = None) -> None:
        super().__init__(*args)
        self.summary = summary


class ConfigError(NdcError):
    """A configuration file or setting is invalid."""


class SourceUnavailableError(NdcError):
    """A source database could not be reached or its connection was lost mid-extract: nothing was merged."""


class WarehouseUnavailableError(NdcError):
    """The warehouse's connection was lost mid-load: nothing of the run was merged."""


class ContractViolation(NdcError):
    """A contract rule that applies to a whole batch or table failed: the hand-off is blocked, nothing of it is
    loaded or published. Alerts name the dataset and the ``check``."""

    def __init__(self, message: str, *, dataset: str | None = None, check: str | None = None,
                 summary: str | None = None, failures: list[dict] | None = None) -> None:
        super().__init__(message)
        self.dataset, self.check = dataset, check
        # what may be stored (ledger, alerts): no sample rows, which can hold personal data
        self.summary, self.failures = summary or message, failures or []


class SchemaDriftError(ContractViolation):
    """The source's columns no longer match the contract: the hand-off is blocked, nothing is loaded."""


class BatchBlockedError(ContractViolation):
    """A whole-batch rule of gate 1 (e.g. the row count dropped too far) blocked the load."""


class PublishBlockedError(ContractViolation):
    """Gate 2: a built shared model failed its contract; nothing was published."""


class LedgerError(NdcError):
    """The ledger chain does not verify."""
