"""One sequence's sampler, built as llama-cpp-python's Llama.generate builds its own.

The batched engine samples each sequence from its own row of the step's logits with a sampler chain of its
own, so that temperature, top-p, penalties and seed act per sequence exactly as they did when a sequence
had a context to itself: the same request with the same seed gives the same text, alone or batched.
"""

from __future__ import annotations

from llama_cpp._internals import LlamaSampler

from services.shared.domain import SamplingParams

# llama-cpp-python's own completion defaults, so that a request here samples exactly as
# Llama.create_completion would with the same seed.
TOP_K = 40
MIN_P = 0.05
_TYPICAL_P = 1.0
_REPEAT_PENALTY = 1.0
# The tokens penalties look back over: Llama's last_n_tokens_size.
_PENALTY_LAST_N = 64
_MIN_KEEP = 1


def sampler_for(sampling: SamplingParams, seed: int, n_vocab: int) -> LlamaSampler:
    """The chain Llama._init_sampler builds for these parameters: penalties, then greedy or the filters and dist."""
    sampler = LlamaSampler()
    sampler.add_penalties(
        n_vocab=n_vocab,
        penalty_last_n=_PENALTY_LAST_N,
        penalty_repeat=_REPEAT_PENALTY,
        penalty_freq=sampling.frequency_penalty or 0.0,
        penalty_present=sampling.presence_penalty or 0.0,
    )
    temperature = float(sampling.temperature)
    if temperature == 0.0:
        sampler.add_greedy()
        return sampler
    sampler.add_top_k(TOP_K)
    sampler.add_typical(_TYPICAL_P, _MIN_KEEP)
    sampler.add_top_p(float(sampling.top_p), _MIN_KEEP)
    sampler.add_min_p(MIN_P, _MIN_KEEP)
    sampler.add_temp(temperature)
    sampler.add_dist(seed)
    return sampler
