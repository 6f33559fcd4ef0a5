"""StoreUnavailable, IdempotencyConflict, and which driver errors mean the database is out of reach, not a bug."""

from __future__ import annotations

from sqlalchemy import exc

# SQLSTATE classes of a lost or refused connection (08) and of an operator's intervention (57): a server
# shutting down, starting up, or cancelling a statement that ran past its timeout.
_UNREACHABLE_SQLSTATE_CLASSES = frozenset({"08", "57"})


class StoreUnavailable(Exception):
    """The database cannot be reached or does not answer in time; the message names it, password masked."""

    @classmethod
    def wrapping(cls, masked_url: str, cause: BaseException) -> StoreUnavailable:
        # The first line only: SQLAlchemy appends the statement and its parameters on the lines after.
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return cls(f"database {masked_url} is unavailable: {detail}")


def is_connect_failure(error: BaseException) -> bool:
    """While connecting, any driver error leaves the store without a database: refused, timed out,
    no such database, bad credentials."""
    return isinstance(error, exc.DBAPIError | exc.TimeoutError | OSError | TimeoutError)


def is_unreachable(error: BaseException) -> bool:
    """Once connected: the connection broke, the server went away, or a statement (or lock) timed out.

    SQLite reports a lock held past busy_timeout, a missing file and a full disk as OperationalError.
    Constraint violations and programming errors are not here: they are the caller's to see.
    """
    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError | OSError | TimeoutError):
        return True
    if isinstance(error, exc.DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        return error.connection_invalidated or sqlstate[:2] in _UNREACHABLE_SQLSTATE_CLASSES
    return False


class IdempotencyConflict(Exception):
    """A submit reused an idempotency key of the same owner with a different request: job_id is the first
    job's (or batch's)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"the idempotency key was used for {job_id} with a different request")
        self.job_id = job_id
