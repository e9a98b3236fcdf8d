"""The batched capture writer: records are queued on the request path and inserted in batches off it.

    writer = RecordWriter(engine, queue_size=10000, batch_size=500)
    await writer.start()
    await writer.put(record)   # waits (backpressure) when the queue is full; never drops
    await writer.close()       # drains and flushes everything queued

A batch the database refuses is retried with backoff; if it still fails it is appended to the spill file
(JSONL) so nothing captured is lost, as is a single row the database refuses for its values (after
`normalize_record` has made every text value fit its column); `tiergate store replay-spill` loads it back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, String, Text, insert, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from tiergate.store.schema import records

log = logging.getLogger("tiergate.store")

_COLUMNS = [str(c.name) for c in records.columns if c.name != "id"]
_TEXT = {str(c.name): getattr(c.type, "length", None) for c in records.columns
         if isinstance(c.type, String | Text) and c.name != "id"}
"""Text columns and their length limits (None: unlimited)."""


def normalize_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Every column present (executemany needs one shape), unknown keys dropped, and every text value made one the
    column can hold in any database: NUL characters (which PostgreSQL's text refuses) become U+FFFD, and a value
    longer than its column (a caller's 300-character `user`, `model` or workload) is cut to fit, ending in "…".
    Such a row was refused by PostgreSQL and lost."""
    row = {name: rec.get(name) for name in _COLUMNS}
    row["role"] = row["role"] or "primary"
    row["stream"] = bool(row["stream"])
    for name, limit in _TEXT.items():
        value = row[name]
        if isinstance(value, str):
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
            if limit is not None and len(value) > limit:
                value = value[: limit - 1] + "…"
            row[name] = value
    return row


REQUIRED = [str(c.name) for c in records.columns if not c.nullable and c.default is None and c.name != "id"]
"""Columns a record must bring (the others have defaults or may be null)."""


@dataclass
class InsertResult:
    written: int = 0
    skipped: list[str] = field(default_factory=list)
    """request_ids already in the store."""
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    """Rows the database refused for another reason, with the reason."""


def insert_records(engine: Engine, rows: list[dict[str, Any]]) -> int:
    """Insert normalized rows; a duplicate request_id skips that row instead of failing the batch. Returns the
    rows written (a row the database refuses for another reason is logged as an error)."""
    result = insert_records_checked(engine, rows)
    for row, reason in result.rejected:
        log.error("record %s refused by the store: %s", row.get("request_id"), reason)
    return result.written


def insert_records_checked(engine: Engine, rows: list[dict[str, Any]]) -> InsertResult:
    """Insert normalized rows, one batch first, then row by row if the batch is refused: each row is written,
    skipped (its request_id is already stored), or rejected with the database's reason."""
    result = InsertResult()
    if not rows:
        return result
    try:
        with engine.begin() as conn:
            conn.execute(insert(records), rows)
        result.written = len(rows)
        return result
    except SQLAlchemyError as exc:
        if not _row_error(exc):
            raise
    for row in rows:
        try:
            with engine.begin() as conn:
                conn.execute(insert(records), [row])
            result.written += 1
        except SQLAlchemyError as exc:
            if not _row_error(exc):
                raise
            if row.get("request_id") is not None and _stored(engine, row["request_id"]):
                log.warning("record %s already stored; skipped", row.get("request_id"))
                result.skipped.append(str(row["request_id"]))
            else:
                result.rejected.append((row, str(getattr(exc, "orig", None) or exc).splitlines()[0]))
    return result


def _row_error(exc: SQLAlchemyError) -> bool:
    """An error about a row's values (a constraint, a value the column cannot hold), as opposed to the database
    being unavailable, which the caller retries and then spills."""
    return isinstance(exc, IntegrityError | DataError) or (isinstance(exc, StatementError)
                                                           and not isinstance(exc, DBAPIError))


def _stored(engine: Engine, request_id: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(records.c.id).where(records.c.request_id == request_id)).first() is not None


class RecordWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        queue_size: int = 10000,
        batch_size: int = 500,
        flush_interval_s: float = 0.05,
        spill_path: str | None = "tiergate-spill.jsonl",
        retries: int = 3,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.spill_path = spill_path
        self.retries = retries
        self.on_written = on_written
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._queue_size = queue_size
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._spill_lock = threading.Lock()
        self.written = 0
        self.spilled = 0
        self.enqueued = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self._queue_size)
        self._task = asyncio.create_task(self._run(), name="tiergate-record-writer")

    async def put(self, record: dict[str, Any]) -> None:
        """Queue one record. Waits while the queue is full: callers feel backpressure, nothing is dropped."""
        if self._queue is None or self._closing and self._task is None:
            # Not running (CLI use, or after close): write through synchronously.
            await asyncio.to_thread(self._write_batch, [normalize_record(record)])
            return
        self.enqueued += 1
        await self._queue.put(record)

    async def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        while True:
            first = await q.get()
            batch = [first]
            if q.qsize() < self.batch_size and self.flush_interval_s > 0 and not self._closing:
                # linger briefly so a trickle of requests becomes one transaction, not many
                await asyncio.sleep(self.flush_interval_s)
            while len(batch) < self.batch_size:
                try:
                    batch.append(q.get_nowait())
                except asyncio.QueueEmpty:
                    break
            rows = [normalize_record(r) for r in batch]
            try:
                await asyncio.to_thread(self._write_batch, rows)
            finally:
                for _ in batch:
                    q.task_done()

    def _write_batch(self, rows: list[dict[str, Any]]) -> None:
        delay = 0.1
        for attempt in range(1, self.retries + 1):
            try:
                result = insert_records_checked(self.engine, rows)
                self.written += result.written
                if self.on_written:
                    self.on_written(result.written)
                if result.rejected:  # values the database refuses even so: kept in the spill file, not lost
                    for row, reason in result.rejected:
                        log.error("record %s refused by the store: %s", row.get("request_id"), reason)
                    self._spill([row for row, _ in result.rejected], "records refused by the store")
                return
            except SQLAlchemyError as exc:
                log.error("store write failed (attempt %d/%d): %s", attempt, self.retries, exc.__class__.__name__)
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 4
        self._spill(rows)

    def _spill(self, rows: list[dict[str, Any]], why: str = "store unavailable") -> None:
        if not self.spill_path:
            log.error("%s and no spill file configured: %d records lost", why, len(rows))
            return
        with self._spill_lock, open(self.spill_path, "ab") as fh:
            for row in rows:
                fh.write(orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.spilled += len(rows)
        log.error("%s: %d records kept in %s", why, len(rows), self.spill_path)

    async def flush(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    async def close(self, timeout: float | None = None) -> None:
        """Drain everything queued, then stop."""
        self._closing = True
        if self._queue is None or self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.error("writer drain timed out with %d records queued; spilling them", self._queue.qsize())
            rest = []
            while not self._queue.empty():
                rest.append(normalize_record(self._queue.get_nowait()))
                self._queue.task_done()
            await asyncio.to_thread(self._spill, rest)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None


@dataclass
class ReplayResult:
    written: int = 0
    skipped: int = 0
    """records already in the store"""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(line, reason) of each record that could not be stored"""
    archived_to: str | None = None
    """where the file went (None: left in place, because something was rejected)"""


def replay_spill(engine: Engine, path: str) -> ReplayResult:
    """Load a spill file back into the store. Records already stored are skipped; a line that is not a JSON
    record, lacks a required field or is refused by the database is rejected with its reason. The file is renamed
    afterwards only when nothing was rejected, so a fixed file can be replayed again."""
    result = ReplayResult()
    pending: list[tuple[int, dict[str, Any]]] = []
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                result.rejected.append((line_no, f"not a JSON record ({exc})"))
                continue
            if not isinstance(rec, dict):
                result.rejected.append((line_no, "not a JSON object"))
                continue
            missing = [c for c in REQUIRED if rec.get(c) is None]
            if missing:
                result.rejected.append((line_no, f"missing required field(s) {', '.join(missing)}"))
                continue
            pending.append((line_no, normalize_record(rec)))
    for i in range(0, len(pending), 500):
        chunk = pending[i:i + 500]
        done = insert_records_checked(engine, [row for _, row in chunk])
        result.written += done.written
        result.skipped += len(done.skipped)
        lines = {id(row): line_no for line_no, row in chunk}
        result.rejected += [(lines[id(row)], reason) for row, reason in done.rejected]
    result.rejected.sort()
    if not result.rejected:
        result.archived_to = path + f".replayed-{int(time.time())}"
        os.replace(path, result.archived_to)
    return result
