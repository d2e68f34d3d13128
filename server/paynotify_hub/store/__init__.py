"""Storage backends behind one Protocol; `open_store(url)` picks one by URL scheme."""

from __future__ import annotations

from paynotify_hub.store.base import Store, StoreError, StoreEvent, StoreUnavailable

__all__ = ["Store", "StoreError", "StoreEvent", "StoreUnavailable", "open_store"]


def open_store(url: str) -> Store:
    """`sqlite:///path/to/file.db` (embedded, one hub) or `postgresql://...` (several hubs).

    The store is returned unopened: call `await store.open()`.
    """
    if url.startswith("sqlite:///"):
        from paynotify_hub.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from paynotify_hub.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(
        f"unsupported store URL {url.split(':', 1)[0]!r}: use sqlite:///PATH or postgresql://..."
    )
