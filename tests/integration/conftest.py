from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from meshserve.inference.v1 import inference_pb2_grpc

from tests.conftest import track, untrack
from tests.integration.edge_support import certs, descriptor_set, gateway  # noqa: F401 (the edge tests' fixtures)
from tests.postgres import postgres_server  # noqa: F401 (a fixture, found by pytest through this import)
from tests.store_fixtures import database, database_url, own_postgres  # noqa: F401 (fixtures, as above)
from tests.support import ServiceProcess, free_port, inference_args, wait_until_serving, write_model_config


@pytest.fixture(scope="package")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_config(tmp_path_factory.mktemp("config"), context_length=1024, slots=2)


@pytest.fixture(scope="package")
def inference_process(model_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One real inference service, plaintext on loopback, shared by the tests that only call it."""
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "inference.log"
    process = track(ServiceProcess("inference", inference_args(model_config, port, "--plaintext"), log))
    process.address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(process.address) as channel:
        wait_until_serving(channel, process)
    yield process
    process.terminate()
    untrack(process)


@pytest.fixture(scope="package")
def inference_address(inference_process: ServiceProcess) -> str:
    return inference_process.address


@pytest.fixture()
def inference(inference_address: str) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    with grpc.insecure_channel(inference_address) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
