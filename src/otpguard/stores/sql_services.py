"""The shells' records in the SQL stores (mixed into ``SQLStore``): the dashboard's
sign-outs, one row each in ``signed_out`` (purged after their ``until``), and the
service records, one row each in ``services``, an account's listed in the order
they were first kept (``seq``, per account) by its index. The migrations
(``sql_schema.services``, ``sql_schema.SIGNED_OUT``) copied both from the flags
earlier releases kept them as."""

from __future__ import annotations

from collections.abc import Sequence

from .records import ServiceRecord
from .sql import WRITE, Cursor, Row, SQLDialect, upsert

S_COLUMNS = "id, account, document, created_at"
_SELECT = f"SELECT {S_COLUMNS} FROM services"  # noqa: S608 - constant
#: A new record goes last in its account's order (``seq``); a replaced one keeps its place.
_UPSERT = (
    f"INSERT INTO services ({S_COLUMNS}, seq) VALUES (?, ?, ?, ?, "  # noqa: S608 - constant
    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM services WHERE account = ?)) "
    "ON CONFLICT (id) DO UPDATE SET account = excluded.account, "
    "document = excluded.document, created_at = excluded.created_at"
)


_SIGN_OUT = upsert("signed_out", "id, until", "id")


def _record(row: Row) -> ServiceRecord:
    return ServiceRecord(str(row[0]), str(row[1]), str(row[2]), float(row[3]))


class SQLServices(SQLDialect):
    async def _lock_keys(self, cur: Cursor, keys: Sequence[str]) -> None:
        """``SQLStore``'s: PostgreSQL's advisory locks, nothing on SQLite."""

    async def put_service(self, record: ServiceRecord, cap: int) -> bool:
        async def run(cur: Cursor) -> bool:
            # Two creates under one account count one after the other (PostgreSQL's
            # transactions do not exclude each other's inserts by themselves).
            await self._lock_keys(cur, ["services:" + record.account])
            if await cur.one("SELECT 1 FROM services WHERE id = ?", (record.id,)) is None:
                row = await cur.one(
                    "SELECT COUNT(*) FROM services WHERE account = ?", (record.account,)
                )
                if row is not None and int(row[0]) >= cap:
                    return False
            values = (record.id, record.account, record.document, record.created_at)
            await cur.run(_UPSERT, (*values, record.account))
            return True

        return await self._run(run, WRITE)

    async def get_service(self, service_id: str) -> ServiceRecord | None:
        row = await self._run(lambda cur: cur.one(f"{_SELECT} WHERE id = ?", (service_id,)))
        return None if row is None else _record(row)

    async def list_services(self, account: str) -> list[ServiceRecord]:
        sql = f"{_SELECT} WHERE account = ? ORDER BY seq"
        return [_record(r) for r in await self._run(lambda cur: cur.all(sql, (account,)))]

    async def delete_service(self, service_id: str) -> bool:
        return await self._changed("DELETE FROM services WHERE id = ?", (service_id,))

    async def sign_out(self, session_id: str, until: float) -> None:
        await self._run(lambda cur: cur.run(_SIGN_OUT, (session_id, until)))

    async def signed_out(self, session_id: str, now: float) -> bool:
        sql = "SELECT 1 FROM signed_out WHERE id = ? AND until > ?"
        return await self._run(lambda cur: cur.one(sql, (session_id, now))) is not None
