"""What both llama.cpp engines do the same way around the model: render and tokenize prompts, describe the
model's shape, route llama.cpp's own log lines, and read the process's resident memory."""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import jinja2
import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from services.inference.core.model import PreparedPrompt
from services.shared.domain import GenerationRequest
from services.shared.errors import invalid_argument
from services.shared.mesh_config import ModelConfig

# llama.cpp's own levels are not reliable (routine notes arrive as warnings or errors), so its lines are
# kept at DEBUG; real failures surface as exceptions from llama-cpp-python.
_native_log = logging.getLogger("llama.cpp")

F16_BYTES = 2


class PromptRenderer:
    """Turns a request into the tokens the model reads: the chat template for messages, the vocabulary for both.

    `vocabulary` is any Llama holding the model's vocabulary; the batched engine's holds nothing else.
    """

    def __init__(self, config: ModelConfig, vocabulary: Llama) -> None:
        self._config = config
        self._vocabulary = vocabulary
        self._formatter = _chat_formatter(config, vocabulary)

    def tokenize(self, request: GenerationRequest) -> PreparedPrompt:
        if request.messages:
            rendered = self._render_chat(request).encode("utf-8")
            return PreparedPrompt(tuple(self._vocabulary.tokenize(rendered, add_bos=False, special=True)))
        prompt = request.prompt.encode("utf-8")
        return PreparedPrompt(tuple(self._vocabulary.tokenize(prompt, add_bos=True, special=True)))

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


def _chat_formatter(config: ModelConfig, llm: Llama) -> Jinja2ChatFormatter | None:
    template = config.read_chat_template() or llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    bos, eos = llm.token_bos(), llm.token_eos()
    return Jinja2ChatFormatter(
        template=template,
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
    )


@dataclass(frozen=True)
class ModelShape:
    """The model's attention shape, from its GGUF metadata: what one position of its KV cache costs."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, llm: Llama) -> ModelShape:
        meta = llm.metadata
        arch = meta.get("general.architecture", "")
        layers = int(meta.get(f"{arch}.block_count", 0))
        kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", meta.get(f"{arch}.attention.head_count", 0)))
        head_dim = int(meta.get(f"{arch}.attention.key_length", 0)) or _embedding_head_dim(meta, arch)
        return cls(layers, kv_heads, head_dim)

    @property
    def kv_bytes_per_token(self) -> int:
        # Keys and values, per layer, per KV head, per position, in f16.
        return 2 * self.layers * self.kv_heads * self.head_dim * F16_BYTES


def _embedding_head_dim(meta: dict[str, str], arch: str) -> int:
    heads = int(meta.get(f"{arch}.attention.head_count", 0))
    return int(meta.get(f"{arch}.embedding_length", 0)) // heads if heads else 0


def route_native_log() -> None:
    """llama.cpp writes to stderr directly; route it through logging so every line stays JSON."""
    llama_cpp.llama_log_set(_forward_native_log, ctypes.c_void_p(0))


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
