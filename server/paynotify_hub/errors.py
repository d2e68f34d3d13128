"""The hub's error tree. Domain code raises these; the gRPC layer maps them in one table
(`paynotify_hub.status.STATUS_CODES`), so this module imports no gRPC.

Error tree::

    HubError                    anything the hub refuses or cannot do; the message is safe to show
    ├── ConfigError             (also a ValueError) bad flags or settings: the hub does not start
    ├── InvalidArgument         a request is malformed (bad settings in Subscribe's open, ...)
    ├── NotFound                a group that is not declared on this hub
    └── Unavailable             try again later, maybe on another hub
        ├── ShuttingDown        this hub is stopping: reconnect
        └── StoreDown           the store cannot be reached or did not answer in time

`paynotify_hub.store.StoreError` (raised by backends) is wrapped into `StoreDown` by the broker.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HubError",
    "InvalidArgument",
    "NotFound",
    "ShuttingDown",
    "StoreDown",
    "Unavailable",
]


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigError(HubError, ValueError):
    """A flag or setting is invalid; the message names it and says what is allowed."""


class InvalidArgument(HubError):
    """A request carries something the hub cannot accept."""


class NotFound(HubError):
    """The named thing (a group) does not exist on this hub."""


class Unavailable(HubError):
    """Temporary: the caller should retry, with backoff."""


class ShuttingDown(Unavailable):
    """The hub is stopping; subscribers reconnect (to this hub after restart, or another)."""


class StoreDown(Unavailable):
    """The store failed or timed out; nothing was promised."""
