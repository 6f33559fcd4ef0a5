"""The inference service's composition root: settings in, engine, core and server built, run until SIGTERM."""

from __future__ import annotations

import asyncio
import importlib
import logging

from meshserve.inference.v1 import inference_pb2_grpc

from services.inference.core.engine import Engine
from services.inference.core.service import InferenceCore
from services.inference.core.slots import SlotPool
from services.inference.core.validation import RequestLimits
from services.inference.registration import Registration, SchedulerRegistration
from services.inference.servicer import SERVICE_NAME, InferenceServicer
from services.inference.settings import InferenceSettings
from services.shared.grpc_server import (
    add_health_and_reflection,
    bind,
    create_service_server,
    set_serving,
    stop_gracefully,
    wait_for_shutdown_signal,
)
from services.shared.mesh_config import ModelConfig, load_mesh_config
from services.shared.service_main import run_service
from telemetry.metrics import SLOTS_IN_USE, SLOTS_TOTAL, serve_metrics

log = logging.getLogger("services.inference")


# Each engine's module imports its library on import; vLLM is an optional extra, so only the engine a
# model asks for is imported.
_ENGINES = {
    "llama_cpp": ("services.inference.engines.llama_cpp", "LlamaCppEngine"),
    "llama_cpp_per_slot": ("services.inference.engines.llama_cpp_per_slot", "PerSlotLlamaCppEngine"),
    "vllm": ("services.inference.engines.vllm", "VllmEngine"),
    "simulated": ("services.inference.engines.simulated", "SimulatedEngine"),
}
_INSTALL_HINTS = {
    "vllm": "install it with `make vllm` on CPU hosts, or `make VLLM_EXTRA=vllm vllm` on GPU hosts",
}


class EngineNotInstalled(RuntimeError):
    pass


def build_engine(config: ModelConfig) -> Engine:
    module_name, class_name = _ENGINES[config.engine]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        hint = _INSTALL_HINTS.get(config.engine, "reinstall meshserve")
        raise EngineNotInstalled(
            f"model {config.name!r} runs on the {config.engine} engine, which is not installed ({error}); {hint}"
        ) from error
    return getattr(module, class_name)(config)


async def serve(settings: InferenceSettings) -> int:
    mesh = load_mesh_config(settings.config)
    model = mesh.model(settings.model) if settings.model else mesh.models[0]
    engine = build_engine(model)
    limits = RequestLimits(
        model.name, model.context_length, model.default_max_tokens, model.default_temperature, model.default_top_p
    )
    slots = SlotPool(model.slots)
    core = InferenceCore(engine, limits, slots)
    SLOTS_TOTAL.labels(model.name).set(slots.total)
    SLOTS_IN_USE.labels(model.name).set_function(lambda: slots.total - slots.free)

    server = create_service_server(settings)
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(core, model.name, settings.trace_content), server
    )
    health = await add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.listen, settings.tls_files())
    await server.start()
    serve_metrics(settings.metrics_listen)
    log.info("listening on %s (port %d), loading %s", settings.listen, port, model.name)
    registration = start_registration(settings, model, slots)

    # The server answers health checks (NOT_SERVING) and refuses work while the model loads.
    loading = asyncio.create_task(asyncio.to_thread(engine.load))
    signalled = asyncio.create_task(wait_for_shutdown_signal())
    done, _ = await asyncio.wait({loading, signalled}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if loading in done:
        if loading.exception() is not None:
            log.error("could not load %s", model.name, exc_info=loading.exception())
            signalled.cancel()
            exit_code = 1
        else:
            core.mark_ready(loading.result())
            await set_serving(health, [SERVICE_NAME])
            log.info("%s is loaded and SERVING", model.name)
            log.info("stopping on %s", (await signalled).name)
    core.mark_stopping()
    # NOT_SERVING first, which stops the scheduler granting here while running streams finish; the
    # registration ends after them, so the scheduler does not call their slots lost while they drain.
    await stop_gracefully(server, health, settings.shutdown_grace_seconds)
    if registration is not None:
        registration.cancel()
    if loading.done() and loading.exception() is None:
        await engine.close()
    log.info("stopped")
    return exit_code


def start_registration(settings: InferenceSettings, model: ModelConfig, slots: SlotPool) -> asyncio.Task[None] | None:
    """Registers with the scheduler, if one is named; it follows the endpoint's health from then on."""
    if not settings.scheduler:
        return None
    registration = Registration(
        model.name, settings.advertised_address(), settings.node_name, model.device, slots.total
    )
    running = SchedulerRegistration(
        settings.scheduler, settings.tls_files(), registration, lambda: slots.total - slots.free
    )
    return asyncio.create_task(running.run())


def main() -> None:
    run_service("inference", InferenceSettings(_cli_parse_args=True), serve)
