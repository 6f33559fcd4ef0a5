"""Builds a tiny Llama model with random weights, offline, in Hugging Face format, for the vLLM engine.

No model can be downloaded here, so the tests make one: a byte-level BPE tokenizer trained on a few
sentences, a chat template, and a four-layer Llama of 45M parameters with head_dim 64 (vLLM's CPU
attention kernels do not take 16). Its output is noise, but it is real vLLM work: tokenizing, batching,
streaming, aborting. It is large enough that a token takes milliseconds, as with a real model, rather
than flooding the mesh with thousands of tokens a second.

The end-of-sequence token's output row is zeroed and the others scaled up, so the random model never
picks it: every request runs to max_tokens, which keeps usage counts and timings exact.

It also has a special marker token, <|marker|>, made the model's first greedy choice after MARKER_PROMPT:
its output row is the row of the token the model would have picked there, made a quarter more likely. So
a test can see a special token generated, and kept out of the text unless asked for.

    python -m tests.tiny_llama DIRECTORY
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

# Bump when the model below changes, so that cached copies are rebuilt.
BUILD_VERSION = 5
DEFAULT_CACHE = Path.home() / ".cache" / "meshserve" / "models"

_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a mesh of services streams tokens to every client",
    "hello world, this is a tiny model with random weights",
    "schedulers admit work by memory pressure and priority",
]
_LOGIT_SCALE = 50.0
MARKER = "<|marker|>"
MARKER_PROMPT = "the quick brown fox"


def cached_tiny_llama(cache: Path = DEFAULT_CACHE) -> Path:
    """The model directory in the cache, built on first use. Safe when two processes race to build it."""
    target = cache / f"tiny-llama-v{BUILD_VERSION}"
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = build_tiny_llama(Path(scratch) / "model")
        try:
            built.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    return target


def build_tiny_llama(directory: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<s>", "</s>", MARKER], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", additional_special_tokens=[MARKER]
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.save_pretrained(directory)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(_LOGIT_SCALE)
        model.lm_head.weight[fast.eos_token_id].zero_()
        model.to(torch.bfloat16)
        _make_the_marker_likeliest_after(model, fast, MARKER_PROMPT)
    model.save_pretrained(directory)
    return directory


def _make_the_marker_likeliest_after(model, tokenizer, prompt: str) -> None:
    import torch

    marker = tokenizer.convert_tokens_to_ids(MARKER)
    prompt_ids = torch.tensor([tokenizer.encode(prompt)])
    hidden = model.model(prompt_ids).last_hidden_state[0, -1]
    logits = model.lm_head(hidden)
    logits[marker] = float("-inf")
    chosen = int(logits.argmax())
    # A quarter more likely than the chosen token, whichever the sign of its logit.
    scale = 1.25 if float(logits[chosen]) > 0 else 0.75
    model.lm_head.weight[marker] = model.lm_head.weight[chosen] * scale


if __name__ == "__main__":
    destination = Path(sys.argv[1])
    if destination.exists():
        shutil.rmtree(destination)
    print(build_tiny_llama(destination))
