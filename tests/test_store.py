"""The capture store on SQLite and PostgreSQL: migrations, batched writer, backpressure, spill, keys."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tiergate.errors import NotFound
from tiergate.store.db import create_store_engine, open_store
from tiergate.store.keys import create_key, list_keys, lookup_key, revoke_key
from tiergate.store.migrations import MIGRATIONS, migrate
from tiergate.store.records import count_records, query_records
from tiergate.store.writer import RecordWriter, replay_spill


def _rec(i: int, workload: str = "w") -> dict:
    return {"request_id": f"r{i}", "created_at": time.time(), "workload": workload, "status": "ok",
            "tier": "local", "messages": [{"role": "user", "content": f"hello {i}"}], "params": {"model": "m"},
            "answer": f"a{i}", "prompt_tokens": 3, "completion_tokens": 2, "cost_usd": 0.001, "stream": False}


def test_migrations_are_recorded_and_idempotent(store_url: str) -> None:
    engine = create_store_engine(store_url)
    assert migrate(engine) == [name for name, _ in MIGRATIONS]
    assert migrate(engine) == []
    with engine.connect() as conn:
        names = [r[0] for r in conn.execute(text("SELECT name FROM tiergate_migrations"))]
    assert names == [name for name, _ in MIGRATIONS]
    engine.dispose()


def test_migrations_on_in_memory_sqlite() -> None:
    engine = open_store("sqlite:///:memory:")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM records")).scalar() == 0


def test_writer_batches_and_backpressure(store_url: str) -> None:
    engine = open_store(store_url)

    async def go() -> RecordWriter:
        w = RecordWriter(engine, queue_size=5, batch_size=7, flush_interval_s=0.001, spill_path=None)
        await w.start()
        # 300 concurrent producers against a queue of 5: they wait, none is dropped
        await asyncio.gather(*(w.put(_rec(i)) for i in range(300)))
        await w.close()
        return w

    w = asyncio.run(go())
    assert w.written == 300
    assert count_records(engine) == 300
    rows = query_records(engine, limit=2)
    assert rows[0]["request_id"] == "r299" and rows[0]["messages"][0]["content"] == "hello 299"
    engine.dispose()


def test_duplicate_request_ids_do_not_lose_the_batch(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'd.db'}")

    async def go() -> None:
        w = RecordWriter(engine, batch_size=10, spill_path=None)
        await w.start()
        for i in [1, 2, 2, 3]:
            await w.put(_rec(i))
        await w.close()

    asyncio.run(go())
    assert count_records(engine) == 3


def test_store_outage_spills_then_replays(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    engine = open_store(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE records RENAME TO records_away"))
    spill = tmp_path / "spill.jsonl"

    async def go() -> RecordWriter:
        w = RecordWriter(engine, batch_size=50, spill_path=str(spill), retries=2)
        await w.start()
        await asyncio.gather(*(w.put(_rec(i)) for i in range(20)))
        await w.close()
        return w

    w = asyncio.run(go())
    assert w.written == 0 and w.spilled == 20
    assert len(spill.read_text().splitlines()) == 20
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE records_away RENAME TO records"))
    assert replay_spill(engine, str(spill)).written == 20
    assert count_records(engine) == 20
    assert not spill.exists()


def test_hostile_values_are_stored_and_a_refused_row_is_spilled(store_url: str, tmp_path: Path) -> None:
    """On PostgreSQL, a NUL echoed into the answer, or a caller's `user`, `model` or workload longer than its
    column, made the row refused, logged and dropped: neither stored nor spilled. They are stored now (NUL as
    U+FFFD, long values cut to fit), and a row the database still refuses goes to the spill file."""
    engine = open_store(store_url)
    spill = tmp_path / "spill.jsonl"
    hostile = [{**_rec(1), "answer": "a\x00b", "error": "e\x00"}, {**_rec(2), "caller": "u" * 300},
               {**_rec(3), "model": "m" * 300, "status": "error", "http_status": 404},
               {**_rec(4, workload="w" * 200)}, {**_rec(5), "created_at": None}]  # the last: NOT NULL

    async def go() -> RecordWriter:
        w = RecordWriter(engine, batch_size=10, spill_path=str(spill))
        await w.start()
        for rec in hostile:
            await w.put(rec)
        await w.close()
        return w

    w = asyncio.run(go())
    assert (w.written, w.spilled) == (4, 1)
    rows = {r["request_id"]: r for r in query_records(engine, limit=None)}
    assert rows["r1"]["answer"] == "a\ufffdb" and rows["r1"]["error"] == "e\ufffd"
    assert rows["r2"]["caller"] == "u" * 255 + "…" and len(rows["r3"]["model"]) == 256
    assert len(rows["r4"]["workload"]) == 128
    assert '"request_id":"r5"' in spill.read_text()
    engine.dispose()


def test_keys_are_hashed_and_revocable(store_url: str) -> None:
    engine = open_store(store_url)
    key_id, secret = create_key(engine, "alice", ["triage"])
    assert secret.startswith("tg-") and len(secret) > 30
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT key_hash FROM api_keys"))]
    assert secret not in stored[0]
    assert lookup_key(engine, secret)["workloads"] == ["triage"]
    assert lookup_key(engine, secret + "x") is None
    assert [k["name"] for k in list_keys(engine)] == ["alice"]
    assert revoke_key(engine, "alice") == 1
    assert lookup_key(engine, secret) is None
    with pytest.raises(NotFound):
        revoke_key(engine, key_id)
    engine.dispose()


def test_bad_store_url_is_a_clear_error() -> None:
    from tiergate.errors import ConfigError

    with pytest.raises(ConfigError, match="store.url"):
        open_store("nonsense://")
    with pytest.raises(ConfigError, match="cannot open"):
        open_store("postgresql://nobody@127.0.0.1:1/none")
