"""The store's tables, once for both backends. Queries are built from these; migrations create them.

A migration is a frozen copy of the schema as it was when written, so versions/ never imports this module;
tests/integration/test_store.py checks that the migrated database and these tables agree.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, Index, Integer, LargeBinary, MetaData, Table, Text, UniqueConstraint

metadata = MetaData()

keys = Table(
    "keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    # Space-separated: a scope is one word, and no backend-specific array type is needed.
    Column("scopes", Text, nullable=False),
    Column("max_priority", Text, nullable=False),
    Column("requests_per_minute", Integer),
    Column("tokens_per_minute", Integer),
    Column("max_concurrent", Integer),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double),
    Column("revoked_at", Double),
    Column("updated_at", Double, nullable=False),
    Column("previous_secret_hash", Text),
    Column("previous_valid_until", Double),
)

audit = Table(
    "audit",
    metadata,
    # SQLite autoincrements only an INTEGER primary key; the id orders records that share a time.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("subject", Text, nullable=False),
    Column("surface", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("priority", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("latency_ms", Double, nullable=False),
    Column("trace_id", Text, nullable=False),
    Index("ix_audit_at", "at"),
    Index("ix_audit_subject_at", "subject", "at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("batch_id", Text),
    Column("custom_id", Text),
    Column("state", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("request", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    # Who the job runs as: the owner's identity when it was submitted, as the edge encoded it.
    Column("identity", Text, nullable=False),
    Column("idempotency_key", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("expires_at", Double),
    Column("started_at", Double),
    Column("lease_owner", Text),
    Column("lease_until", Double),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("result", Text),
    Column("error", Text),
    Column("finished_at", Double),
    # Both backends treat NULLs as distinct here, so jobs without a key never collide.
    UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    Index("ix_jobs_batch_id", "batch_id"),
    # The claim's order: the queued jobs of the highest priority, oldest first.
    Index("ix_jobs_state_priority_created_at", "state", "priority", "created_at"),
    Index("ix_jobs_owner_created_at", "owner", "created_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("batch_id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("total", Integer, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("idempotency_key", Text),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double),
    Column("cancelled_at", Double),
    # OpenAI's Batch API: the endpoint its lines call, the file they came from, and the caller's metadata.
    Column("endpoint", Text),
    Column("input_file_id", Text),
    Column("metadata", Text),
    UniqueConstraint("owner", "idempotency_key", name="uq_batches_owner_idempotency_key"),
    Index("ix_batches_owner_created_at", "owner", "created_at"),
)

files = Table(
    "files",
    metadata,
    Column("file_id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("filename", Text, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Index("ix_files_owner_created_at", "owner", "created_at"),
)
