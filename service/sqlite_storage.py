"""SQLite write transactions and the mapping of disk failures to client errors, shared by the stores that
keep their state in SQLite (the gallery's records, the footage jobs).

Written here rather than taken from a library: it is the few lines of ``BEGIN IMMEDIATE`` / ``COMMIT`` /
``ROLLBACK`` that the standard ``sqlite3`` module leaves to its caller when ``isolation_level=None``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator

from service.errors import StorageFullError, StorageUnavailableError

SQLITE_FULL = 13


def is_disk_full(error: sqlite3.Error) -> bool:
    # Extended result codes keep the primary code in their low byte (SQLITE_IOERR_WRITE = 10 | 3 << 8).
    return ((getattr(error, "sqlite_errorcode", None) or 0) & 0xFF) == SQLITE_FULL


def is_storage_failure(error: sqlite3.Error) -> bool:
    """Whether an SQLite error comes from the disk or the database file rather than from the statement."""
    # Integrity and programming errors are the caller's or the code's, not the disk's.
    return not isinstance(error, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError))


def storage_error(error: sqlite3.Error, full: str, unavailable: str) -> StorageFullError | StorageUnavailableError:
    """StorageFullError(``full``) when the disk is full, else StorageUnavailableError(``unavailable``)."""
    return StorageFullError(full) if is_disk_full(error) else StorageUnavailableError(unavailable)


@contextlib.contextmanager
def write_transaction(
    db: sqlite3.Connection, map_error: Callable[[sqlite3.Error], Exception | None]
) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` on a connection opened with ``isolation_level=None``; all or
    nothing. Any exception in the block (or a failing COMMIT, which can leave the transaction open) rolls
    it back first. An ``sqlite3.Error`` is then raised as ``map_error(error)``, or as is where that
    returns None."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
    except sqlite3.Error as error:
        mapped = map_error(error)
        if mapped is None:
            raise
        raise mapped from None
