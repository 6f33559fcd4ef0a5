"""Penalties, log probabilities and special tokens, through the real inference service and the real model."""

from __future__ import annotations

import math

import grpc
import pytest
from grpc_status import rpc_status
from meshserve.inference.v1 import inference_pb2 as pb

from tests.llama_reference import reference_llama

# The default model answers this prompt, greedily, with its <start_of_image> marker token again and again.
SPECIAL_TOKEN_PROMPT = "Write a haiku about the sea"
REPETITIVE_PROMPT = "one two one two one two one two one two"


def generate(inference, **fields) -> list[pb.GenerateResponse]:
    return list(inference.Generate(pb.GenerateRequest(**fields), timeout=120))


def text_of(messages: list[pb.GenerateResponse]) -> str:
    return "".join(message.text for message in messages)


def test_special_tokens_stay_out_of_the_text_unless_asked_for(inference) -> None:
    hidden = generate(inference, prompt=SPECIAL_TOKEN_PROMPT, max_tokens=8, temperature=0.0)
    shown = generate(inference, prompt=SPECIAL_TOKEN_PROMPT, max_tokens=8, temperature=0.0, skip_special_tokens=False)
    assert "<start_of_image>" in text_of(shown), "the prompt no longer makes the model emit its marker token"
    assert "<start_of_image>" not in text_of(hidden)
    # The same tokens were generated and counted either way; only their text differs.
    assert [t for m in hidden for t in m.token_ids] == [t for m in shown for t in m.token_ids]
    assert hidden[-1].usage.output_tokens == shown[-1].usage.output_tokens == 8


def test_a_frequency_penalty_changes_a_repetitive_greedy_completion(inference) -> None:
    plain = generate(inference, prompt=REPETITIVE_PROMPT, max_tokens=12, temperature=0.0)
    penalised = generate(inference, prompt=REPETITIVE_PROMPT, max_tokens=12, temperature=0.0, frequency_penalty=2.0)
    presence = generate(inference, prompt=REPETITIVE_PROMPT, max_tokens=12, temperature=0.0, presence_penalty=2.0)
    assert text_of(penalised) != text_of(plain)
    assert text_of(presence) != text_of(plain)
    assert text_of(plain).count("one") > text_of(penalised).count("one")


def test_logprobs_match_llama_cpp_pythons_own_for_every_token(inference) -> None:
    prompt = "The capital of France is"
    messages = generate(inference, prompt=prompt, max_tokens=6, temperature=0.0, logprobs=3)
    entries = [entry for message in messages for entry in message.logprobs]
    token_ids = [token for message in messages for token in message.token_ids]
    assert len(entries) == len(token_ids) == 6

    reference = reference_llama(n_ctx=256, n_threads=2, logits_all=True)
    expected = reference.create_completion(prompt, max_tokens=6, temperature=0.0, logprobs=3)["choices"][0]["logprobs"]
    for entry, expected_logprob, expected_top in zip(
        entries, expected["token_logprobs"], expected["top_logprobs"], strict=True
    ):
        assert entry.logprob == pytest.approx(expected_logprob, abs=1e-3)
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the likeliest one, and the alternatives come likeliest first.
        assert entry.top_logprobs[0].token_bytes == entry.token_bytes
        assert [top.logprob for top in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert sorted(expected_top.values(), reverse=True) == pytest.approx(
            [t.logprob for t in entry.top_logprobs], abs=1e-3
        )
        assert all(math.isfinite(top.logprob) and top.logprob <= 0 for top in entry.top_logprobs)


def test_no_logprobs_unless_asked_for(inference) -> None:
    messages = generate(inference, prompt="The capital of France is", max_tokens=4, temperature=0.0)
    assert all(not message.logprobs for message in messages)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"presence_penalty": 2.5}, "INVALID_PRESENCE_PENALTY"),
        ({"frequency_penalty": -3.0}, "INVALID_FREQUENCY_PENALTY"),
        ({"logprobs": 21}, "INVALID_LOGPROBS"),
        ({"logprobs": -1}, "INVALID_LOGPROBS"),
    ],
)
def test_out_of_range_sampling_is_refused_with_its_reason(inference, fields, reason) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        generate(inference, prompt="Hello", max_tokens=4, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in str(rpc_status.from_call(caught.value))
