"""The whole mesh on PostgreSQL (MESHSERVE_DATABASE_URL): keys issued and checked, and the audit log, in a
real server the test starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.identity_support import bearer, create_key, meshserve
from tests.e2e.test_identity_audit import records_appear
from tests.otlp_receiver import OtlpReceiver
from tests.postgres import PostgresServer
from tests.support import write_model_config


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture(scope="module")
def pg_mesh(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver, database_url: str) -> Iterator[Mesh]:
    directory: Path = tmp_path_factory.mktemp("pg-mesh")
    config = write_model_config(directory, context_length=512, slots=1)
    with running_mesh(directory, config, traces, {"MESHSERVE_DATABASE_URL": database_url}) as started:
        yield started


def test_keys_and_the_audit_log_live_in_postgresql(pg_mesh: Mesh, postgres_server: PostgresServer,
                                                   database_url: str) -> None:  # fmt: skip
    database = database_url.rsplit("/", 1)[1]
    assert not (pg_mesh.state_dir / "meshserve.db").exists(), "no SQLite file beside PostgreSQL"
    key_id, key = create_key(pg_mesh, "--scopes", "inference")
    assert postgres_server.psql(f"SELECT name FROM keys WHERE key_id = '{key_id}'", database).startswith("test-")
    admins = postgres_server.psql("SELECT count(*) FROM keys WHERE name = 'development admin'", database)
    assert admins == "1", "make up's development key is in PostgreSQL too"
    reply = pg_mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(key))
    assert reply.status == 200, reply.body
    records = records_appear(pg_mesh, key_id, 1)
    assert records[0]["trace_id"] == reply.trace_id
    assert int(postgres_server.psql(f"SELECT count(*) FROM audit WHERE subject = 'key:{key_id}'", database)) >= 1
    assert meshserve(pg_mesh, "keys", "list").returncode == 0
