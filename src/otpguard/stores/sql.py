"""What the two SQL stores (SQLite, PostgreSQL) share below the store itself: the
dialect's primitives (:class:`SQLDialect`), the cursor a statement runs on, column lists
and row mappers. Statements are written once with ``?`` placeholders; the PostgreSQL
cursor turns them into psycopg's ``%s``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from ..events import Event
from ..models import Channel, Status, Verification
from ..purpose import LOGIN
from .base import Alert, ApiKey, EventQuery, RefusalTally

T = TypeVar("T")
Row = tuple[Any, ...]

#: ``_run``'s transaction modes: none (one statement, atomic by itself), a write
#: transaction (SQLite's BEGIN IMMEDIATE: the write lock before the first read) or a
#: read-only one (one consistent snapshot).
WRITE, READ = "IMMEDIATE", "DEFERRED"


class Cursor(Protocol):
    """One connection, inside or outside a transaction; ``?`` placeholders."""

    async def one(self, sql: str, params: Any = ()) -> Row | None: ...

    async def all(self, sql: str, params: Any = ()) -> list[Row]: ...

    async def run(self, sql: str, params: Any = ()) -> int:
        """Execute; the rows changed."""
        ...

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


Body = Callable[[Cursor], Coroutine[Any, Any, T]]


class Unavailable(Exception):
    """The store cannot run the operation now (not open, server known down); the text
    is the reason in the StorageError."""


class SQLDialect:
    """What each SQL store provides the shared code with (``sql_store.SQLStore`` and
    its mixins ``sql_records.py``, ``sql_lists.py``, ``webhooks_sql.py``)."""

    #: Appended to a SELECT that must lock the rows it reads (PostgreSQL's FOR UPDATE;
    #: SQLite's write transaction holds the whole database already).
    for_update = ""
    #: Appended to a claim's SELECT so concurrent claims skip each other's rows.
    skip_locked = ""

    async def _run(self, body: Body[T], mode: str | None = None, *, slow: bool = False) -> T:
        """Run ``body(cursor)``, in a transaction of ``mode`` (None: none). ``slow``:
        a long read or a purge batch, which SQLite runs off the event loop."""
        raise NotImplementedError

    async def _lock(self, cur: Cursor, keys: Sequence[int]) -> None:
        """Inside a write transaction: take the transaction's advisory locks ``keys``
        (PostgreSQL, for writers that count before they insert); SQLite's write
        transaction already excludes every other writer."""

    async def _changed(self, sql: str, params: Sequence[Any]) -> bool:
        """Run one statement; whether it changed exactly one row."""
        return await self._run(lambda cur: cur.run(sql, params)) == 1

    def _json_in(self, value: Any) -> Any:
        """A JSON document as the driver stores it."""
        raise NotImplementedError

    def _json_out(self, stored: Any) -> Any:
        """A stored JSON document as Python data."""
        raise NotImplementedError

    def _delete_batch(self, table: str, condition: str) -> str:
        """A DELETE of at most ``?`` (the last parameter) rows matching ``condition``."""
        raise NotImplementedError

    def _purge_batch(self) -> int:
        """Rows per DELETE of a purge: a huge purge never holds the locks for long."""
        raise NotImplementedError


def marks(n: int) -> str:
    """``?, ?, ...``: ``n`` placeholders."""
    return ", ".join(["?"] * n)


def upsert(table: str, columns: str, key: str) -> str:
    """Insert ``columns`` (comma-separated) into ``table``, or replace the row of ``key``."""
    names = [c.strip() for c in columns.split(",")]
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c != key)
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({marks(len(names))}) "  # noqa: S608 - constant
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


V_COLUMNS = (
    "id, to_number, channel, status, key_id, code_hash, created_at, updated_at, expires_at,"
    " resend_available_at, attempts, sends, client_ip, country, locale, code_length,"
    " service_name, owner, purpose, amount, currency, payee, service"
)
V_PLACEHOLDERS = 23  # how many columns V_COLUMNS names
SELECT_V = f"SELECT {V_COLUMNS} FROM verifications"  # noqa: S608 - constant
E_FIELDS = (
    "id", "type", "ts", "verification_id", "number_masked", "number_hash", "country",
    "channel", "client_ip", "reason", "rule", "provider_code", "details",
)  # fmt: skip
A_COLUMNS = "id, rule, subject, status, opened_at, updated_at, resolved_at, message, details"
K_COLUMNS = "id, name, key_hash, scopes, created_at, revoked_at"


def _as_is(value: Any) -> Any:
    return value


def verification_from_row(row: Sequence[Any]) -> Verification:
    """A row selected with ``V_COLUMNS``."""
    return Verification(
        id=row[0],
        to=row[1],
        channel=Channel(row[2]),
        status=Status(row[3]),
        key_id=row[4],
        code_hash=row[5],
        created_at=row[6],
        updated_at=row[7],
        expires_at=row[8],
        resend_available_at=row[9],
        attempts=row[10],
        sends=row[11],
        client_ip=row[12],
        country=row[13],
        locale=row[14],
        code_length=row[15],
        service_name=row[16],
        owner=row[17],
        purpose=row[18] or LOGIN,  # NULL: a row from before purposes, a login code
        amount=row[19],
        currency=row[20],
        payee=row[21],
        service=row[22],
    )


def verification_values(v: Verification) -> tuple[Any, ...]:
    """The values of ``V_COLUMNS`` for an insert, in order."""
    return (
        v.id, v.to, v.channel.value, v.status.value, v.key_id, v.code_hash,
        v.created_at, v.updated_at, v.expires_at, v.resend_available_at,
        v.attempts, v.sends, v.client_ip, v.country, v.locale,
        v.code_length, v.service_name, v.owner, v.purpose, v.amount, v.currency, v.payee,
        v.service,
    )  # fmt: skip


def alert_from_row(row: Sequence[Any], decode: Callable[[Any], Any] = _as_is) -> Alert:
    """A row selected with ``A_COLUMNS``; ``decode`` turns the stored details into a dict."""
    return Alert(
        id=row[0],
        rule=row[1],
        subject=row[2],
        status=row[3],
        opened_at=row[4],
        updated_at=row[5],
        resolved_at=row[6],
        message=row[7],
        details=decode(row[8]),
    )


def api_key_from_row(row: Sequence[Any], decode: Callable[[Any], Any] = _as_is) -> ApiKey:
    """A row selected with ``K_COLUMNS``; ``decode`` turns the stored scopes into a list."""
    return ApiKey(
        id=row[0],
        name=row[1],
        key_hash=row[2],
        scopes=tuple(decode(row[3])),
        created_at=row[4],
        revoked_at=row[5],
    )


def tally_from_row(row: Sequence[Any], decode: Callable[[Any], Any] = _as_is) -> RefusalTally:
    """A row of ``minute, key, count, last_ts, example``."""
    return RefusalTally(
        minute=int(row[0]),
        key=row[1],
        count=int(row[2]),
        last_ts=float(row[3]),
        example=Event.from_dict(decode(row[4])),
    )


def event_conditions(query: EventQuery, mark: str) -> tuple[list[str], list[Any]]:
    """The SQL conditions (and their parameters) for an EventQuery's scalar filters,
    with ``mark`` as the placeholder (``?`` for SQLite, ``%s`` for psycopg). The
    ``types`` and ``number_hash`` filters are lists, left to the caller."""
    where: list[str] = []
    params: list[Any] = []
    for condition, value in (
        ("client_ip = ", query.client_ip),
        ("country = ", query.country),
        ("ts >= ", query.since),
        ("ts < ", query.until),
        ("id < ", query.before_id),
    ):
        if value is not None:
            where.append(condition + mark)
            params.append(value)
    return where, params
