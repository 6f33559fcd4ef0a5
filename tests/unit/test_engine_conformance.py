"""Each engine satisfies the Engine protocol: every method, of the same kind, with the same signature.

A Protocol is only checked where something is typed against it; the inference core receives its engine from
build_engine, so without this a missing or misshapen method would fail on its first call, in production.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import typing

import pytest

from services.inference.core.engine import Engine
from tests.support import VLLM_MISSING

ENGINES = [
    pytest.param("services.inference.engines.llama_cpp", "LlamaCppEngine", id="llama_cpp"),
    pytest.param("services.inference.engines.llama_cpp_per_slot", "PerSlotLlamaCppEngine", id="llama_cpp_per_slot"),
    pytest.param("services.inference.engines.simulated", "SimulatedEngine", id="simulated"),
    pytest.param(
        "services.inference.engines.vllm",
        "VllmEngine",
        id="vllm",
        marks=pytest.mark.skipif(VLLM_MISSING, reason="the vLLM engine is not installed: run `make vllm`"),
    ),
]
PROTOCOL_METHODS = sorted(
    name for name, member in vars(Engine).items() if inspect.isfunction(member) and not name.startswith("_")
)


def kind_of(function: typing.Callable) -> str:
    """How a caller uses the method: awaits it, iterates it asynchronously, or calls it plainly."""
    if inspect.iscoroutinefunction(function):
        return "awaited"
    if inspect.isasyncgenfunction(function):
        return "async iterator"
    origin = typing.get_origin(typing.get_type_hints(function).get("return"))
    return "async iterator" if origin is not None and issubclass(origin, collections.abc.AsyncIterator) else "plain"


def signature_of(function: typing.Callable) -> tuple[list[str], dict[str, object]]:
    parameters = [name for name in inspect.signature(function).parameters if name != "self"]
    return parameters, typing.get_type_hints(function)


def test_the_protocol_has_the_methods_the_core_calls() -> None:
    assert PROTOCOL_METHODS == ["activity", "close", "generate", "load", "prepare"]


@pytest.mark.parametrize(("module", "name"), ENGINES)
def test_an_engine_implements_every_protocol_method_alike(module: str, name: str) -> None:
    engine = getattr(importlib.import_module(module), name)
    for method in PROTOCOL_METHODS:
        wanted, given = getattr(Engine, method), getattr(engine, method, None)
        assert given is not None, f"{name} has no {method}()"
        assert kind_of(given) == kind_of(wanted), f"{name}.{method} is {kind_of(given)}, not {kind_of(wanted)}"
        assert signature_of(given) == signature_of(wanted), f"{name}.{method} differs from Engine.{method}"
