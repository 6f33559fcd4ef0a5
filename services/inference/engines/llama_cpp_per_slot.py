"""The per-slot llama.cpp engine (llama-cpp-python): one context per slot, as meshserve ran llama.cpp before
its batched engine (services.inference.engines.llama_cpp), kept as an engine a model may choose.

Each slot owns a context of its own and runs one sequence at a time; slots never share a forward pass. Each context
also holds its own copy of the weights (llama.cpp repacks quantized weights into its own buffers on the
CPU), so the footprint counts the weights once per slot, and is checked against the memory the process
actually grew by while loading. Every call into a context runs on that slot's single worker thread: the
event loop never blocks, and the calls of one context stay in order. A cancelled request aborts the
decode it has in flight, so that a recalled background request stops taking the cores at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import random
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import Llama

from services.inference.core.model import EngineActivity, ModelMetadata, PreparedPrompt
from services.inference.engines.llama_prompt import (
    F16_BYTES,
    ModelShape,
    PromptRenderer,
    resident_bytes,
    route_native_log,
)
from services.inference.engines.llama_sampling import MIN_P, TOP_K
from services.inference.engines.llama_stream import TokenStep, stream_completion, token_budget
from services.inference.engines.llama_tokens import SpecialTokens, logits_at, token_logprob
from services.shared.domain import GenerationChunk, GenerationRequest, SamplingParams
from services.shared.mesh_config import ModelConfig

log = logging.getLogger(__name__)

ENGINE_NAME = "llama_cpp_per_slot"


class _StopFlag:
    """Stops a context's computation between two graph nodes, from any thread, without the GIL.

    llama.cpp asks its abort callback after every node of a decode. A Python callback would take the GIL
    hundreds of times a step (and wait up to the switch interval each time the event loop holds it), so
    the callback is libc's strlen over a two-byte buffer: its first byte set reads as "abort", and the
    second stays zero so that the read never goes past the buffer.
    """

    _strlen = ctypes.cast(ctypes.CDLL(None).strlen, llama_cpp.ggml_abort_callback)

    def __init__(self, llm: Llama) -> None:
        self._buffer = ctypes.create_string_buffer(2)
        llama_cpp.llama_set_abort_callback(llm.ctx, self._strlen, ctypes.cast(self._buffer, ctypes.c_void_p))

    def raise_(self) -> None:
        self._buffer[0] = b"x"

    def lower(self) -> None:
        self._buffer[0] = b"\0"


@dataclass
class _Slot:
    llm: Llama
    worker: ThreadPoolExecutor
    stop: _StopFlag
    # The tokens its context held when its last request ended: what a new prompt can reuse. llama-cpp-python
    # matches the real cache itself, so this only steers the choice of slot.
    cached: tuple[int, ...] = ()


@dataclass(eq=False)
class _Run:
    """One generation on a slot. Only the slot's worker thread touches it after creation."""

    llm: Llama
    prompt: list[int]
    seed: int
    sampling: SamplingParams
    special: SpecialTokens
    tokens: Iterator[int] | None = None
    completion: list[int] = field(default_factory=list)
    # The completion less the special tokens that are kept out of its text.
    visible: list[int] = field(default_factory=list)


class PerSlotLlamaCppEngine:
    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._prompts: PromptRenderer | None = None
        self._running: set[_Run] = set()
        self._kv_bytes_per_token = 0

    def load(self) -> ModelMetadata:
        route_native_log()
        model_file = self._config.resolve_model_file()
        resident_before = resident_bytes()
        log.info("loading %s from %s into %d slots", self._config.name, model_file, self._config.slots)
        for number in range(self._config.slots):
            llm = Llama(
                model_path=str(model_file),
                n_ctx=self._config.context_length,
                n_threads=self._config.threads,
                verbose=False,
            )
            worker = ThreadPoolExecutor(1, thread_name_prefix=f"llama-slot-{number}")
            self._slots.append(_Slot(llm, worker, _StopFlag(llm)))
        self._free = list(self._slots)
        self._prompts = PromptRenderer(self._config, self._slots[0].llm)
        # Every slot holds the same model, so one vocabulary's answers serve them all.
        self._special = SpecialTokens(self._slots[0].llm)
        grown_by = resident_bytes() - resident_before
        return self._metadata(self._slots[0].llm, model_file.stat().st_size, grown_by)

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        assert self._prompts is not None, "prepare() before load()"
        return await asyncio.to_thread(self._prompts.tokenize, request)

    async def generate(self, request: GenerationRequest, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        slot = self._take_slot(prompt.token_ids)
        run = self._start(slot.llm, request, list(prompt.token_ids))
        loop = asyncio.get_running_loop()
        self._running.add(run)
        budget = token_budget(request, len(run.prompt), self._config.context_length)
        try:
            async for chunk in stream_completion(
                request, len(run.prompt), budget, lambda: loop.run_in_executor(slot.worker, _advance, run)
            ):
                yield chunk
        finally:
            # A cancelled request stops computing at once: the token still in flight is aborted mid-decode
            # (llama.cpp removes its cells from the cache) rather than finished for nobody. The flag is
            # lowered again on the slot's thread, behind that token, before the slot's next request.
            slot.stop.raise_()
            slot.worker.submit(_close, run, slot.stop)
            slot.cached = (*run.prompt, *run.completion)
            self._free.append(slot)
            self._running.discard(run)

    def activity(self) -> EngineActivity:
        # Every context allocates its whole KV cache when created; "used" is the cells its tokens fill.
        filled_tokens = sum(len(run.prompt) + len(run.completion) for run in self._running)
        return EngineActivity(
            running_requests=len(self._running),
            waiting_requests=0,
            kv_cache_capacity_bytes=len(self._slots) * self._config.context_length * self._kv_bytes_per_token,
            kv_cache_used_bytes=filled_tokens * self._kv_bytes_per_token,
        )

    async def close(self) -> None:
        for slot in self._slots:
            slot.worker.shutdown(wait=True)
            slot.llm.close()
        self._slots.clear()
        self._free.clear()

    def _take_slot(self, prompt: tuple[int, ...]) -> _Slot:
        """The free slot whose context already holds the longest start of this prompt, as llama-server picks.

        Its context reads only the rest, so a prompt that comes back (a system prompt, a conversation's
        next turn, an interactive user's template) is not read again after other work used another slot.
        Where no context holds more than the first token, the least recently used slot is overwritten, so
        that the most recent prompts stay cached. The free list is in the order the slots were released.
        """
        shared, best = max(
            ((Llama.longest_token_prefix(slot.cached, prompt), slot) for slot in self._free), key=lambda pair: pair[0]
        )
        if shared <= 1:
            best = self._free[0]
        self._free.remove(best)
        return best

    def _start(self, llm: Llama, request: GenerationRequest, prompt: list[int]) -> _Run:
        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else random.randrange(2**32)
        return _Run(llm, prompt, seed, sampling, self._special)

    def _metadata(self, llm: Llama, weights_bytes: int, measured_bytes: int) -> ModelMetadata:
        shape = ModelShape.of(llm)
        self._kv_bytes_per_token = shape.kv_bytes_per_token
        kv_per_slot = self._kv_bytes_per_token * self._config.context_length
        estimate = self._config.slots * (weights_bytes + kv_per_slot)
        if measured_bytes > estimate:
            log.info("loading took %d bytes against %d estimated; reporting the measurement", measured_bytes, estimate)
        return ModelMetadata(
            name=self._config.name,
            engine=ENGINE_NAME,
            context_length=self._config.context_length,
            slot_count=self._config.slots,
            weights_bytes=weights_bytes,
            kv_cache_bytes_per_slot=kv_per_slot,
            memory_footprint_bytes=max(estimate, measured_bytes),
            layer_count=shape.layers,
            kv_head_count=shape.kv_heads,
            head_dim=shape.head_dim,
            kv_cache_element_bytes=F16_BYTES,
        )


def _advance(run: _Run) -> TokenStep | None:
    """Runs on the slot's worker thread: samples one token and detokenizes the completion so far."""
    sampling = run.sampling
    if run.tokens is None:
        run.llm.set_seed(run.seed)
        run.tokens = run.llm.generate(
            run.prompt,
            top_k=TOP_K,
            top_p=float(sampling.top_p),
            min_p=MIN_P,
            temp=float(sampling.temperature),
            presence_penalty=sampling.presence_penalty or 0.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
        )
    try:
        token = next(run.tokens)
    except StopIteration:
        return None
    logprob = None
    if sampling.logprobs is not None:
        logits = logits_at(run.llm.ctx, -1, run.llm.n_vocab())
        logprob = token_logprob(run.llm, logits, token, sampling.logprobs)
    if llama_cpp.llama_vocab_is_eog(run.llm._model.vocab, token):
        return TokenStep(token, True, b"", logprob)
    run.completion.append(token)
    if not (sampling.skip_special_tokens and token in run.special):
        run.visible.append(token)
    text = run.llm.detokenize(run.visible, prev_tokens=run.prompt, special=not sampling.skip_special_tokens)
    return TokenStep(token, False, text, logprob)


def _close(run: _Run, stop: _StopFlag) -> None:
    close = getattr(run.tokens, "close", None)
    if close is not None:
        close()
    stop.lower()
