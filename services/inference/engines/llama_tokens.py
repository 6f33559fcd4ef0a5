"""What the llama.cpp engine reads about single tokens: whether one is special, its text, its log probability."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
from llama_cpp import Llama

from services.shared.domain import TokenChoice, TokenLogprob

# Tokens that mark structure, not text: end of turn, padding, unused slots of the vocabulary.
_NEVER_TEXT = (
    llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED
)
# The longest piece llama.cpp writes for one token is far shorter than this.
_PIECE_BUFFER_BYTES = 256


class SpecialTokens:
    """Which tokens skip_special_tokens leaves out, remembered per token id.

    Asked once per generated token on an engine's worker thread: every call into llama.cpp releases the GIL,
    and a busy event loop may then hold it for a whole switch interval before the worker gets it back, so
    each token id is looked up in llama.cpp once and remembered.
    """

    def __init__(self, llm: Llama) -> None:
        self._llm = llm
        self._known: dict[int, bool] = {}

    def __contains__(self, token: int) -> bool:
        special = self._known.get(token)
        if special is None:
            special = self._known[token] = is_special(self._llm, token)
        return special


def is_special(llm: Llama, token: int) -> bool:
    """Whether the token is one a tokenizer's skip_special_tokens leaves out of the text.

    GGUF files mark a model's added markup tokens (Gemma's <start_of_image>, a mask token) as user-defined
    rather than control tokens, so llama.cpp renders them as text. Those are the ones written in angle
    brackets; a user-defined token that is a plain word stays text.
    """
    vocab = llm._model.vocab
    attributes = llama_cpp.llama_vocab_get_attr(vocab, token)
    if attributes & _NEVER_TEXT:
        return True
    if attributes & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED:
        text = piece(llm, token)
        return len(text) > 2 and text.startswith(b"<") and text.endswith(b">")
    return False


def piece(llm: Llama, token: int) -> bytes:
    """The token's own bytes, special tokens written out."""
    buffer = ctypes.create_string_buffer(_PIECE_BUFFER_BYTES)
    length = llama_cpp.llama_token_to_piece(llm._model.vocab, token, buffer, _PIECE_BUFFER_BYTES, 0, True)
    return buffer.raw[: max(length, 0)]


def logits_at(ctx: llama_cpp.llama_context_p, output: int, n_vocab: int) -> np.ndarray:
    """The logits of one output of the context's last decode (-1: its last), as a view, not a copy.

    Valid until the context's next decode: read them right after sampling, before the token is evaluated.
    """
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, output), shape=(n_vocab,))


def token_logprob(llm: Llama, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """The sampled token's log probability, and the `top` likeliest tokens, from the logits it was sampled from.

    `llm` only names the tokens: any Llama with the model's vocabulary.
    """
    logprobs = Llama.logits_to_logprobs(logits)
    likeliest = np.argpartition(-logprobs, top)[:top] if top else np.array([], dtype=np.int64)
    likeliest = likeliest[np.argsort(-logprobs[likeliest])]
    return TokenLogprob(_choice(llm, token, logprobs), tuple(_choice(llm, int(t), logprobs) for t in likeliest))


def _choice(llm: Llama, token: int, logprobs: np.ndarray) -> TokenChoice:
    raw = piece(llm, token)
    return TokenChoice(raw.decode("utf-8", errors="replace"), float(logprobs[token]), raw)
