"""The llama.cpp engine (llama-cpp-python): one model, one context, every sequence decoded together.

As llama-server does it: the weights are loaded once, one context holds the KV cache of all `slots`
sequences, each under its own sequence id, and one decode per step runs every running sequence together
(services.inference.engines.llama_steps). A new request joins between two steps; a long prompt is read
in chunks of `batch_tokens` while the others keep decoding. Concurrency costs KV cache, not weights.

Three choices keep a request's text the same alone or batched, for the same seed:
- each sequence has a stream of the cache to itself (kv_unified off), so its attention never spans
  cells of the others;
- flash attention is on: without it, llama.cpp's attention sums in an order that follows the batch;
- the weights stay in llama.cpp's plain CPU layout (use_extra_bufts off). The repacked kernels the
  per-slot engine uses change the arithmetic with the number of rows in a batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator

import llama_cpp
from llama_cpp import Llama

from services.inference.core.batch_plan import BatchPlanner
from services.inference.core.model import EngineActivity, ModelMetadata, PreparedPrompt
from services.inference.engines.llama_prompt import (
    F16_BYTES,
    ModelShape,
    PromptRenderer,
    resident_bytes,
    route_native_log,
)
from services.inference.engines.llama_steps import BatchReport, Delivery, SequenceRun, StepLoop
from services.inference.engines.llama_stream import TokenStep, stream_completion, token_budget
from services.shared.domain import GenerationChunk, GenerationRequest
from services.shared.errors import MeshError
from services.shared.mesh_config import ModelConfig
from telemetry.metrics import DECODE_STEPS, SEQUENCES_PER_STEP

log = logging.getLogger(__name__)

ENGINE_NAME = "llama_cpp"


class LlamaCppEngine:
    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._vocabulary: Llama | None = None
        self._prompts: PromptRenderer | None = None
        self._model: llama_cpp.llama_model_p | None = None
        self._ctx: llama_cpp.llama_context_p | None = None
        self._steps: StepLoop | None = None
        self._kv_bytes_per_token = 0

    def load(self) -> ModelMetadata:
        route_native_log()
        config = self._config
        if config.slots > llama_cpp.llama_max_parallel_sequences():
            raise ValueError(f"llama.cpp runs at most {llama_cpp.llama_max_parallel_sequences()} sequences at once")
        model_file = config.resolve_model_file()
        resident_before = resident_bytes()
        log.info("loading %s from %s for %d sequences", config.name, model_file, config.slots)
        # The tokenizer and chat template come from a vocabulary-only Llama: no weights, no context.
        try:
            self._vocabulary = Llama(model_path=str(model_file), vocab_only=True, verbose=False)
            self._prompts = PromptRenderer(config, self._vocabulary)
            self._model = _load_weights(str(model_file))
            self._ctx = _new_context(self._model, config)
        except BaseException:
            self._release()
            raise
        planner = BatchPlanner(config.batch_tokens, config.slots, cells_per_sequence=config.context_length)
        self._steps = StepLoop(self._ctx, self._vocabulary, planner, config.batch_tokens, self._count_step)
        grown_by = resident_bytes() - resident_before
        return self._metadata(self._vocabulary, model_file.stat().st_size, grown_by)

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        assert self._prompts is not None, "prepare() before load()"
        return await asyncio.to_thread(self._prompts.tokenize, request)

    async def generate(self, request: GenerationRequest, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        assert self._steps is not None, "generate() before load()"
        steps = self._steps
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[Delivery] = asyncio.Queue()

        def deliver(item: Delivery) -> None:
            try:
                loop.call_soon_threadsafe(arrived.put_nowait, item)
            except RuntimeError:
                pass  # the event loop is closed: nobody is left to read it

        async def next_step() -> TokenStep | None:
            item = await arrived.get()
            if isinstance(item, MeshError):
                raise item
            return item

        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else random.randrange(2**32)
        budget = token_budget(request, len(prompt.token_ids), self._config.context_length)
        run = SequenceRun(prompt.token_ids, budget, sampling, seed, deliver)
        steps.admit(run)  # refused here, before the first chunk, when the cache has no room
        try:
            async for chunk in stream_completion(request, len(prompt.token_ids), budget, next_step):
                yield chunk
        finally:
            # Stopped by a stop sequence, cancelled or past its deadline: it leaves before the next step,
            # its cells cleared. The generator ends only then, so that the slot the core gives back is
            # one the engine has room for.
            if steps.cancel(run):
                while (item := await arrived.get()) is not None and not isinstance(item, MeshError):
                    continue

    def activity(self) -> EngineActivity:
        report = self.batch_report()
        per_sequence = self._config.context_length * self._kv_bytes_per_token
        return EngineActivity(
            running_requests=report.running,
            waiting_requests=0,
            kv_cache_capacity_bytes=self._config.slots * per_sequence,
            kv_cache_used_bytes=report.cells_in_use * self._kv_bytes_per_token,
        )

    def batch_report(self) -> BatchReport:
        """The step loop's own account of its steps and cells; a loaded model only."""
        assert self._steps is not None, "batch_report() before load()"
        return self._steps.report()

    async def close(self) -> None:
        if self._steps is not None:
            await asyncio.to_thread(self._steps.close)
            self._steps = None
        self._release()

    def _release(self) -> None:
        """Frees the context, the weights and the vocabulary, whichever are loaded."""
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None
        if self._vocabulary is not None:
            self._vocabulary.close()
            self._vocabulary = self._prompts = None

    def _count_step(self, sequences: int) -> None:
        DECODE_STEPS.labels(self._config.name).inc()
        SEQUENCES_PER_STEP.labels(self._config.name).observe(sequences)

    def _metadata(self, vocabulary: Llama, weights_bytes: int, measured_bytes: int) -> ModelMetadata:
        shape = ModelShape.of(vocabulary)
        self._kv_bytes_per_token = shape.kv_bytes_per_token
        kv_per_sequence = self._kv_bytes_per_token * self._config.context_length
        # The weights once, and a stream of the cache per sequence; the measurement adds the compute buffers.
        estimate = weights_bytes + self._config.slots * kv_per_sequence
        return ModelMetadata(
            name=self._config.name,
            engine=ENGINE_NAME,
            context_length=self._config.context_length,
            slot_count=self._config.slots,
            weights_bytes=weights_bytes,
            kv_cache_bytes_per_slot=kv_per_sequence,
            memory_footprint_bytes=max(estimate, measured_bytes),
            layer_count=shape.layers,
            kv_head_count=shape.kv_heads,
            head_dim=shape.head_dim,
            kv_cache_element_bytes=F16_BYTES,
        )


def _load_weights(model_file: str) -> llama_cpp.llama_model_p:
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    # Read into the process rather than mapped from the file, so its resident memory is the whole model,
    # as the ledger counts it; and kept in the plain layout, as the module's docstring says why.
    params.use_mmap = False
    params.use_extra_bufts = False
    model = llama_cpp.llama_model_load_from_file(model_file.encode("utf-8"), params)
    if not model:
        raise ValueError(f"llama.cpp could not load the model file {model_file}")
    return model


def _new_context(model: llama_cpp.llama_model_p, config: ModelConfig) -> llama_cpp.llama_context_p:
    params = llama_cpp.llama_context_default_params()
    # Each sequence's stream of the cache holds a whole context.
    params.n_ctx = config.slots * config.context_length
    params.n_seq_max = config.slots
    params.kv_unified = False
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    params.n_batch = params.n_ubatch = config.batch_tokens
    params.n_threads = params.n_threads_batch = config.threads
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        # What a context allocates is its KV cache and compute buffers: failing here is running out of memory.
        raise MemoryError(
            f"llama.cpp could not allocate a context of {config.slots} sequences x {config.context_length} tokens"
        )
    return ctx
