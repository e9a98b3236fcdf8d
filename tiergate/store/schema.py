"""Table definitions at the current schema version. Migrations (`migrations.py`) create and evolve them;
queries import these Table objects."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False, doc="unix seconds when the request arrived"),
    Column("workload", String(128), nullable=False),
    Column("model", String(256)),
    Column("tier", String(128)),
    Column("route_reason", String(128)),
    Column("route_score", Float),
    Column("role", String(16), nullable=False, default="primary", doc="primary | shadow | cascade_first"),
    Column("parent_request_id", String(64), doc="for shadow and cascade_first records: the primary request"),
    Column("status", String(16), nullable=False, doc="ok | error"),
    Column("http_status", Integer),
    Column("error", Text),
    Column("stream", Boolean, nullable=False, default=False),
    Column("messages", JSON, doc="the request's messages (None when capture_messages is off)"),
    Column("params", JSON, doc="every other request field"),
    Column("answer", Text),
    Column("response", JSON, doc="extra answer data: confidence, labels, finish_reason, escalation"),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("latency_ms", Float),
    Column("cost_usd", Float),
    Column("api_key_id", String(32)),
    Column("caller", String(256), doc="the OpenAI `user` field or X-Tiergate-Caller"),
)
Index("ix_records_workload_created", records.c.workload, records.c.created_at)
Index("ix_records_created", records.c.created_at)
Index("ix_records_parent", records.c.parent_request_id)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True, doc="public key id, shown in lists and records"),
    Column("name", String(128), nullable=False),
    Column("key_hash", String(128), nullable=False, unique=True, doc="sha256 of the secret"),
    Column("prefix", String(16), nullable=False, doc="first characters of the secret, for recognition"),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("workloads", JSON, doc="workloads this key may use; null for all"),
)

schema_migrations = Table(
    "tiergate_migrations",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("applied_at", Float, nullable=False),
)
