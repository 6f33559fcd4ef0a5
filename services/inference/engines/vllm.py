"""The vLLM engine: AsyncLLM in process, continuous batching over one KV-cache pool.

vLLM puts many sequences into each forward pass, so a vLLM model's slots are its max_num_seqs and
every generate() call is one sequence in vLLM's batch. AsyncLLM runs the model in child processes
(EngineCore and its worker); this process tokenizes, streams the deltas vLLM yields, and aborts a
request inside vLLM the moment its stream is closed (client cancel, deadline or shutdown).

The KV cache is allocated once, at load, as a pool of blocks shared by all running sequences. Its
size is what the scheduler's ledger counts for the model, and vLLM's own scheduler statistics say
how much of it running requests fill.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

# vLLM reads these when first imported. Its log lines go through this service's JSON logging, it sends
# no usage reports, and a model given as a directory never sends it looking for a hub.
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jinja2  # noqa: E402
import psutil  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerBase  # noqa: E402
from vllm import SamplingParams as VllmSamplingParams  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.exceptions import VLLMClientError  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402
from vllm.usage.usage_lib import UsageContext  # noqa: E402
from vllm.v1.engine.async_llm import AsyncLLM  # noqa: E402
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError  # noqa: E402
from vllm.v1.metrics.loggers import StatLoggerBase  # noqa: E402
from vllm.v1.metrics.stats import SchedulerStats  # noqa: E402

from services.inference.core.model import EngineActivity, ModelMetadata, PreparedPrompt
from services.shared.domain import (  # noqa: E402
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    TokenChoice,
    TokenLogprob,
    Usage,
)
from services.shared.errors import MeshError, invalid_argument, unavailable  # noqa: E402
from services.shared.mesh_config import ModelConfig  # noqa: E402

log = logging.getLogger(__name__)

ENGINE_NAME = "vllm"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_FINISH_REASONS = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}
_ENGINE_FAILED_RETRY_SECONDS = 5.0


class SchedulerStatsProbe:
    """Keeps the latest statistics vLLM's scheduler reported: running and waiting requests, KV-cache use.

    vLLM hands every engine step's statistics to its stat loggers; this one only remembers the last.
    """

    def __init__(self) -> None:
        self.latest: SchedulerStats | None = None

    def logger_factory(self, vllm_config: object, engine_index: int = 0) -> StatLoggerBase:
        return _ProbeLogger(self)


class _ProbeLogger(StatLoggerBase):
    def __init__(self, probe: SchedulerStatsProbe) -> None:
        self._probe = probe

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        if scheduler_stats is not None:
            self._probe.latest = scheduler_stats

    def log_engine_initialized(self) -> None:
        pass


class VllmEngine:
    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._llm: AsyncLLM | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._chat_template: str | None = None
        self._stats = SchedulerStatsProbe()
        self._kv_cache_capacity_bytes = 0

    def load(self) -> ModelMetadata:
        directory = self._config.resolve_model_directory()
        options = self._config.vllm
        log.info("loading %s from %s with vLLM, %d sequences at once", self._config.name, directory, self._config.slots)
        arguments = AsyncEngineArgs(
            model=str(directory),
            max_model_len=self._config.context_length,
            max_num_seqs=self._config.slots,
            dtype=options.dtype,
            kv_cache_memory_bytes=int(options.kv_cache_bytes) if options.kv_cache_bytes is not None else None,
            enforce_eager=options.enforce_eager,
            stream_interval=options.stream_interval,
        )
        vllm_config = arguments.create_engine_config(UsageContext.ENGINE_CONTEXT)
        self._stats = SchedulerStatsProbe()
        # disable_log_stats turns off vLLM's periodic log lines; the probe still receives every step's stats.
        self._llm = AsyncLLM.from_vllm_config(
            vllm_config, stat_loggers=[self._stats.logger_factory], disable_log_stats=True
        )
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory))
        # Read once here, not per request: the config's template wins over the tokenizer's own.
        self._chat_template = self._config.read_chat_template() or self._tokenizer.chat_template
        _lower_priority_of_children(options.engine_niceness)
        metadata = self._metadata(self._llm, directory)
        # Everything the loaded model holds beyond its weights is vLLM's KV-cache pool.
        self._kv_cache_capacity_bytes = metadata.memory_footprint_bytes - metadata.weights_bytes
        return metadata

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        return await asyncio.to_thread(self._tokenize, request)

    async def generate(self, request: GenerationRequest, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        llm = self._loaded()
        prompt_ids = list(prompt.token_ids)
        (engine_input,) = await llm.renderer.render_cmpl_async([TokensPrompt(prompt_token_ids=prompt_ids)])
        # vLLM requires request ids to be unique among the requests it holds; a client's id may repeat.
        request_id = f"{request.request_id or 'request'}-{uuid.uuid4().hex}"
        outputs = llm.generate(engine_input, self._sampling(request, len(prompt_ids)), request_id)
        produced = 0
        try:
            async for output in outputs:
                completion = output.outputs[0]
                produced += len(completion.token_ids)
                logprobs = _token_logprobs(completion.token_ids, completion.logprobs, request.sampling.logprobs)
                if output.finished:
                    finish = _finish_reason(completion.finish_reason)
                    usage = Usage(len(prompt_ids), produced)
                    yield GenerationChunk(completion.text, tuple(completion.token_ids), finish, usage, logprobs)
                elif completion.text or completion.token_ids:
                    yield GenerationChunk(completion.text, tuple(completion.token_ids), logprobs=logprobs)
        except EngineDeadError as error:
            raise unavailable("ENGINE_FAILED", f"vLLM stopped: {error}", _ENGINE_FAILED_RETRY_SECONDS) from error
        except EngineGenerateError as error:
            raise unavailable("GENERATION_FAILED", f"vLLM could not generate: {error.__cause__}") from error
        except VLLMClientError as error:
            raise invalid_argument("ENGINE_REFUSED_REQUEST", str(error)) from error
        finally:
            # Closing vLLM's stream before it finished aborts the request inside the engine, which frees
            # its sequence and KV blocks on the next step.
            await outputs.aclose()

    def activity(self) -> EngineActivity:
        stats = self._stats.latest
        if stats is None:
            return EngineActivity(0, 0, self._kv_cache_capacity_bytes, 0)
        return EngineActivity(
            running_requests=stats.num_running_reqs,
            waiting_requests=stats.num_waiting_reqs + stats.num_skipped_waiting_reqs,
            kv_cache_capacity_bytes=self._kv_cache_capacity_bytes,
            kv_cache_used_bytes=int(stats.kv_cache_usage * self._kv_cache_capacity_bytes),
        )

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        self._tokenizer = self._chat_template = None
        if llm is None:
            return
        # The task that reads EngineCore's outputs is stopped first, on this loop: left running, it would
        # see the engine process go away and report a dead engine.
        if llm.output_handler is not None:
            llm.output_handler.cancel()
            await asyncio.gather(llm.output_handler, return_exceptions=True)
            llm.output_handler = None
        # Stops EngineCore and its worker and waits for them; blocking, so off the event loop.
        await asyncio.to_thread(llm.shutdown)

    def _loaded(self) -> AsyncLLM:
        if self._llm is None:
            raise self._not_loaded()
        return self._llm

    def _not_loaded(self) -> MeshError:
        return unavailable("MODEL_NOT_LOADED", f"{self._config.name} is not loaded")

    def _sampling(self, request: GenerationRequest, prompt_length: int) -> VllmSamplingParams:
        sampling = request.sampling
        return VllmSamplingParams(
            max_tokens=min(int(sampling.max_tokens), self._config.context_length - prompt_length),
            temperature=float(sampling.temperature),
            top_p=float(sampling.top_p),
            seed=sampling.seed,
            stop=list(sampling.stop),
            presence_penalty=sampling.presence_penalty or 0.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
            logprobs=sampling.logprobs,
            skip_special_tokens=sampling.skip_special_tokens,
            # Each output carries only the new text and tokens: exactly what a stream chunk needs.
            output_kind=RequestOutputKind.DELTA,
        )

    def _tokenize(self, request: GenerationRequest) -> PreparedPrompt:
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise self._not_loaded()
        if not request.messages:
            return PreparedPrompt(tuple(tokenizer.encode(request.prompt)))
        template = self._chat_template
        if not template:
            raise invalid_argument(
                "CHAT_NOT_SUPPORTED",
                f"{self._config.name} has no chat template; send a plain prompt, or set chat_template in its config",
            )
        messages = [{"role": message.role.value, "content": message.content} for message in request.messages]
        try:
            rendered = tokenizer.apply_chat_template(
                messages, chat_template=template, add_generation_prompt=True, tokenize=False
            )
        except (ValueError, jinja2.TemplateError) as error:
            raise invalid_argument(
                "INVALID_CONVERSATION", f"the chat template refused the conversation: {error}"
            ) from error
        # The template writes the special tokens (BOS included) itself.
        return PreparedPrompt(tuple(tokenizer.encode(rendered, add_special_tokens=False)))

    def _metadata(self, llm: AsyncLLM, directory: Path) -> ModelMetadata:
        vllm_config = llm.vllm_config
        model, cache, parallel = vllm_config.model_config, vllm_config.cache_config, vllm_config.parallel_config
        layers = model.get_num_layers(parallel)
        kv_heads = model.get_num_kv_heads(parallel)
        head_dim = model.get_head_size()
        # A quantized cache ("fp8...") stores one byte per element; otherwise it has the weights' type.
        element_bytes = model.dtype.itemsize if cache.cache_dtype == "auto" else 1
        bytes_per_token = 2 * layers * kv_heads * head_dim * element_bytes
        kv_cache_bytes = int(cache.num_gpu_blocks or 0) * cache.block_size * bytes_per_token
        weights = sum(path.stat().st_size for path in directory.iterdir() if path.suffix in _WEIGHT_SUFFIXES)
        slots = vllm_config.scheduler_config.max_num_seqs
        log.info(
            "%s loaded: %d KV-cache blocks of %d tokens (%d bytes), %d sequences at once",
            self._config.name,
            cache.num_gpu_blocks,
            cache.block_size,
            kv_cache_bytes,
            slots,
        )
        return ModelMetadata(
            name=self._config.name,
            engine=ENGINE_NAME,
            context_length=model.max_model_len,
            slot_count=slots,
            weights_bytes=weights,
            kv_cache_bytes_per_slot=kv_cache_bytes // slots,
            memory_footprint_bytes=weights + kv_cache_bytes,
            layer_count=layers,
            kv_head_count=kv_heads,
            head_dim=head_dim,
            kv_cache_element_bytes=element_bytes,
        )


def _lower_priority_of_children(niceness: int) -> None:
    """Lowers the priority of the engine processes vLLM started (EngineCore and its workers)."""
    if niceness <= 0:
        return
    for child in psutil.Process().children(recursive=True):
        try:
            child.nice(niceness)
        except psutil.Error as error:
            log.warning("could not lower the priority of engine process %d: %s", child.pid, error)


def _token_logprobs(
    token_ids: Sequence[int], logprobs: Sequence[Any] | None, top: int | None
) -> tuple[TokenLogprob, ...]:
    """vLLM's logprobs of each new token (a dict of token id to Logprob, with its rank) as the shared type."""
    if top is None or not logprobs:
        return ()
    entries = []
    for token, candidates in zip(token_ids, logprobs, strict=False):
        ranked = sorted((c for c in candidates.values() if c.rank is not None and c.rank <= top), key=_rank)
        entries.append(TokenLogprob(_choice(candidates[token]), tuple(_choice(c) for c in ranked)))
    return tuple(entries)


def _rank(candidate: Any) -> int:
    return candidate.rank


def _choice(candidate: Any) -> TokenChoice:
    text = candidate.decoded_token or ""
    return TokenChoice(text, float(candidate.logprob), text.encode("utf-8"))


def _finish_reason(reason: str | None) -> FinishReason:
    """vLLM finishes on a stop (end of sequence or a stop string) or on length; an abort is not a finish."""
    if reason in _FINISH_REASONS:
        return _FINISH_REASONS[reason]
    raise unavailable("GENERATION_ABORTED", f"vLLM ended the request without finishing it ({reason})")
