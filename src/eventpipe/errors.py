"""The error hierarchy: what failed, and what the pipe should do about it."""

from __future__ import annotations


class EventpipeError(Exception):
    """Base of every error eventpipe raises on purpose."""


class ConfigError(EventpipeError):
    """A setting or argument is unusable; the message says which and why."""


class DependencyError(EventpipeError):
    """An installed package lacks what eventpipe builds on; the message names what, its version, and what to install."""


class StorageError(EventpipeError):
    """ClickHouse refused or failed; subclasses say how to react."""


class RetryableStorageError(StorageError):
    """Transient: network, timeout, overload, too many parts. Retry with backoff."""


class BusyStorageError(RetryableStorageError):
    """The store is doing work that must end first (a migration copying a table). Retry later; the message
    says what, for a client to read, and names nothing secret."""


class HeavyReadError(BusyStorageError):
    """A read the client cannot narrow went past the API's memory bound (a filter on properties through
    FINAL over many unmerged parts of large events): retry once merges catch up. The message is for the
    client, and names nothing secret."""


class UnknownStorageError(RetryableStorageError):
    """Not recognised. Retried; if it persists while the server answers, the batch is bisected
    so a poison row cannot block the pipe forever."""


class CostlyQueryError(StorageError):
    """A read ran past the API's time or memory bound: the request must be narrowed (a time window, a type), not
    retried as it is. The message says so, and names nothing secret."""


class RejectedDataError(StorageError):
    """The table refuses this data. Isolate the rows and dead-letter them."""


class HaltStorageError(StorageError):
    """Needs an operator: auth, missing table or column. Stop acking, retry slowly."""


class BackupError(EventpipeError):
    """A backup cannot be found, read or restored; the message says which and why."""


class BrokerError(EventpipeError):
    """The MQTT broker cannot be started or reached."""


class RevokedError(EventpipeError):
    """An API key lost its right to an answer while it was sent: removed from the keys file, or its event
    types changed. The answer is cut off."""
