"""The llama.cpp engine (llama-cpp-python).

A llama.cpp context runs one sequence at a time, so each slot owns a context of its own. Each context
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import jinja2
import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from services.inference.core.model import EngineActivity, ModelMetadata, PreparedPrompt
from services.inference.core.text_stream import StreamingText
from services.inference.engines.llama_tokens import SpecialTokens, token_logprob
from services.shared.domain import FinishReason, GenerationChunk, GenerationRequest, SamplingParams, TokenLogprob, Usage
from services.shared.errors import invalid_argument
from services.shared.mesh_config import ModelConfig

log = logging.getLogger(__name__)
# llama.cpp's own levels are not reliable (routine notes arrive as warnings or errors), so its lines are
# kept at DEBUG; real failures surface as exceptions from llama-cpp-python.
_native_log = logging.getLogger("llama.cpp")

ENGINE_NAME = "llama_cpp"
_F16_BYTES = 2
# llama-cpp-python's own completion defaults, so that a request here samples exactly as
# Llama.create_completion would with the same seed.
_TOP_K = 40
_MIN_P = 0.05


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


@dataclass(frozen=True)
class _Step:
    token: int
    end_of_generation: bool
    completion_bytes: bytes
    logprob: TokenLogprob | None = None


class LlamaCppEngine:
    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._formatter: Jinja2ChatFormatter | None = None
        self._running: set[_Run] = set()
        self._kv_bytes_per_token = 0

    def load(self) -> ModelMetadata:
        # llama.cpp writes to stderr directly; route it through logging so every line stays JSON.
        llama_cpp.llama_log_set(_forward_native_log, ctypes.c_void_p(0))
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
        self._formatter = self._chat_formatter(self._slots[0].llm)
        # Every slot holds the same model, so one vocabulary's answers serve them all.
        self._special = SpecialTokens(self._slots[0].llm)
        grown_by = resident_bytes() - resident_before
        return self._metadata(self._slots[0].llm, model_file.stat().st_size, grown_by)

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        return await asyncio.to_thread(self._tokenize, request)

    async def generate(self, request: GenerationRequest, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        slot = self._take_slot(prompt.token_ids)
        run = self._start(slot.llm, request, list(prompt.token_ids))
        loop = asyncio.get_running_loop()
        self._running.add(run)
        try:
            async for chunk in self._stream(run, request, lambda: loop.run_in_executor(slot.worker, _advance, run)):
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

    async def _stream(
        self, run: _Run, request: GenerationRequest, advance: Callable[[], Awaitable[_Step | None]]
    ) -> AsyncIterator[GenerationChunk]:
        text = StreamingText(request.sampling.stop)
        budget = min(int(request.sampling.max_tokens), self._config.context_length - len(run.prompt))
        finish, stopped_by_sequence = FinishReason.LENGTH, False
        pending_ids: list[int] = []
        pending_logprobs: list[TokenLogprob] = []
        completion_bytes = b""
        while len(run.completion) < budget:
            step: _Step | None = await advance()
            if step is None or step.end_of_generation:
                finish = FinishReason.STOP
                break
            pending_ids.append(step.token)
            if step.logprob is not None:
                pending_logprobs.append(step.logprob)
            completion_bytes = step.completion_bytes
            piece = text.update(completion_bytes)
            if piece.stopped:
                finish, stopped_by_sequence = FinishReason.STOP, True
                yield GenerationChunk(piece.text, tuple(pending_ids), logprobs=tuple(pending_logprobs))
                pending_ids, pending_logprobs = [], []
                break
            if piece.text:
                yield GenerationChunk(piece.text, tuple(pending_ids), logprobs=tuple(pending_logprobs))
                pending_ids, pending_logprobs = [], []
        rest = "" if stopped_by_sequence else text.finish(completion_bytes)
        usage = Usage(len(run.prompt), len(run.completion))
        yield GenerationChunk(rest, tuple(pending_ids), finish, usage, tuple(pending_logprobs))

    def _tokenize(self, request: GenerationRequest) -> PreparedPrompt:
        llm = self._slots[0].llm
        if request.messages:
            rendered = self._render_chat(request)
            return PreparedPrompt(tuple(llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)))
        return PreparedPrompt(tuple(llm.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=True)))

    def _render_chat(self, request: GenerationRequest) -> str:
        if self._formatter is None:
            raise invalid_argument(
                "CHAT_NOT_SUPPORTED",
                f"{self._config.name} has no chat template; send a plain prompt, or set chat_template in its config",
            )
        messages = [{"role": message.role.value, "content": message.content} for message in request.messages]
        try:
            return self._formatter(messages=messages).prompt
        except (ValueError, jinja2.TemplateError) as error:
            raise invalid_argument(
                "INVALID_CONVERSATION", f"the chat template refused the conversation: {error}"
            ) from error

    def _chat_formatter(self, llm: Llama) -> Jinja2ChatFormatter | None:
        template = self._config.read_chat_template() or llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        bos, eos = llm.token_bos(), llm.token_eos()
        return Jinja2ChatFormatter(
            template=template,
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        )

    def _metadata(self, llm: Llama, weights_bytes: int, measured_bytes: int) -> ModelMetadata:
        meta = llm.metadata
        arch = meta.get("general.architecture", "")
        layers = int(meta.get(f"{arch}.block_count", 0))
        kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", meta.get(f"{arch}.attention.head_count", 0)))
        head_dim = int(meta.get(f"{arch}.attention.key_length", 0)) or _embedding_head_dim(meta, arch)
        # Keys and values, per layer, per KV head, per position of the context, in f16.
        self._kv_bytes_per_token = 2 * layers * kv_heads * head_dim * _F16_BYTES
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
            layer_count=layers,
            kv_head_count=kv_heads,
            head_dim=head_dim,
            kv_cache_element_bytes=_F16_BYTES,
        )


@llama_cpp.llama_log_callback
def _forward_native_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace").strip()
    if message:
        _native_log.debug(message)


def resident_bytes() -> int:
    """This process's resident memory, from /proc; 0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _embedding_head_dim(meta: dict[str, str], arch: str) -> int:
    heads = int(meta.get(f"{arch}.attention.head_count", 0))
    return int(meta.get(f"{arch}.embedding_length", 0)) // heads if heads else 0


def _advance(run: _Run) -> _Step | None:
    """Runs on the slot's worker thread: samples one token and detokenizes the completion so far."""
    sampling = run.sampling
    if run.tokens is None:
        run.llm.set_seed(run.seed)
        run.tokens = run.llm.generate(
            run.prompt,
            top_k=_TOP_K,
            top_p=float(sampling.top_p),
            min_p=_MIN_P,
            temp=float(sampling.temperature),
            presence_penalty=sampling.presence_penalty or 0.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
        )
    try:
        token = next(run.tokens)
    except StopIteration:
        return None
    logprob = None if sampling.logprobs is None else token_logprob(run.llm, token, sampling.logprobs)
    if llama_cpp.llama_vocab_is_eog(run.llm._model.vocab, token):
        return _Step(token, True, b"", logprob)
    run.completion.append(token)
    if not (sampling.skip_special_tokens and token in run.special):
        run.visible.append(token)
    text = run.llm.detokenize(run.visible, prev_tokens=run.prompt, special=not sampling.skip_special_tokens)
    return _Step(token, False, text, logprob)


def _close(run: _Run, stop: _StopFlag) -> None:
    close = getattr(run.tokens, "close", None)
    if close is not None:
        close()
    stop.lower()
