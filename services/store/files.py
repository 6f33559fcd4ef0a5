"""Files uploaded through OpenAI's Files API: a batch's JSONL input, kept as bytes with its owner."""

from __future__ import annotations

import dataclasses

from sqlalchemy import delete, select

from services.store.connections import Connections
from services.store.records import ACTIVE_STATES, FileRecord
from services.store.schema import batches, files, jobs

_ACTIVE = tuple(sorted(ACTIVE_STATES))
_DESCRIBED = [column for column in files.c if column.name != "content"]


class FileStore:
    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def put(self, record: FileRecord, content: bytes) -> None:
        if record.bytes != len(content):
            raise ValueError(f"the file says {record.bytes} bytes but has {len(content)}")
        async with self._connections.transaction() as connection:
            await connection.execute(files.insert().values({**dataclasses.asdict(record), "content": content}))

    async def get(self, file_id: str, owner: str) -> FileRecord | None:
        """`owner`'s file, without its content; None if it has none of that id."""
        query = select(*_DESCRIBED).where(files.c.file_id == file_id, files.c.owner == owner)
        async with self._connections.transaction() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else FileRecord(**dict(row._mapping))

    async def content(self, file_id: str, owner: str) -> bytes | None:
        query = select(files.c.content).where(files.c.file_id == file_id, files.c.owner == owner)
        async with self._connections.transaction() as connection:
            return (await connection.execute(query)).scalar_one_or_none()

    async def delete_unused_before(self, at: float) -> int:
        """Deletes the files uploaded before `at` that no batch with unfinished lines still reads."""
        in_use = (
            select(batches.c.input_file_id)
            .join(jobs, jobs.c.batch_id == batches.c.batch_id)
            .where(jobs.c.state.in_(_ACTIVE), batches.c.input_file_id.is_not(None))
        )
        statement = delete(files).where(files.c.created_at < at, files.c.file_id.not_in(in_use))
        async with self._connections.transaction() as connection:
            return (await connection.execute(statement)).rowcount
