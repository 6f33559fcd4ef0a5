"""The OpenAI front's streams: server-sent events that end in [DONE] whatever happens, and work that stops
as soon as its client leaves."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing, suppress
from typing import Any, TypeVar

from fastapi import Request
from meshserve.gateway.v1 import gateway_pb2 as pb
from opentelemetry import trace

from gateway.openai.errors import OpenAIError, from_mesh_error
from gateway.openai.metrics import OPENAI_STREAM_ERRORS
from gateway.openai.responses import CompletionWriter
from services.shared.errors import MeshError
from telemetry.genai import response_attributes

log = logging.getLogger("gateway.openai")
# One line per answer, carrying its trace id like every service's request log.
requests_log = logging.getLogger("gateway.openai.requests")

_DONE = "data: [DONE]\n\n"
T = TypeVar("T")


class ClientGone(Exception):
    """The client closed its connection before the answer began."""


async def unless_the_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """The result of `work`, or ClientGone as soon as the client disconnects, with `work` cancelled.

    A request waiting in the scheduler's queue sends nothing, so nothing else would notice that its
    client has gone: it would keep its place, and take a slot, for no one.
    """
    working = asyncio.ensure_future(work)
    leaving = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({working, leaving}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        working.cancel()
        raise
    finally:
        leaving.cancel()
    if working.done():
        return working.result()
    working.cancel()
    with suppress(asyncio.CancelledError, MeshError):
        await working
    raise ClientGone


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next message the server has for this request is its disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def gather(stream: AsyncIterator[pb.GenerateResponse], writer: CompletionWriter) -> None:
    async with aclosing(stream):
        async for message in stream:
            writer.gather(message)


async def events(
    endpoint: str,
    stream: AsyncIterator[pb.GenerateResponse],
    first: pb.GenerateResponse,
    writer: CompletionWriter,
    with_logprobs: bool,
    aliases: dict[str, str],
) -> AsyncIterator[str]:
    """The stream's server-sent events; closing it (the client went away) cancels the generation."""
    async with aclosing(stream):
        try:
            for chunk in writer.chunks(first, with_logprobs):
                yield _event(chunk)
            async for message in stream:
                for chunk in writer.chunks(message, with_logprobs):
                    yield _event(chunk)
            describe_outcome(endpoint, writer)
        except MeshError as error:
            failure = from_mesh_error(error, aliases)
            OPENAI_STREAM_ERRORS.labels(endpoint, failure.code or "unknown").inc()
            requests_log.warning("%s stream failed after it began: %s", endpoint, error)
            yield _event(failure.envelope())
        except Exception:
            # A failure of the front itself still ends the stream in words the client can read.
            log.exception("stream failed in the OpenAI front")
            OPENAI_STREAM_ERRORS.labels(endpoint, "internal_error").inc()
            yield _event(OpenAIError(500, "internal error", "server_error", code="internal_error").envelope())
    yield _DONE


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def describe_outcome(endpoint: str, writer: CompletionWriter) -> None:
    """The served model, finish reason and usage on the request's span and in the log, once the answer is
    complete."""
    if (outcome := writer.outcome()) is not None:
        trace.get_current_span().set_attributes(response_attributes(*outcome))
        model, finish_reason, prompt_tokens, completion_tokens = outcome
        requests_log.info(
            "%s answered: %s tokens for %s prompt tokens on %s (%s)",
            endpoint, completion_tokens, prompt_tokens, model, finish_reason,
        )  # fmt: skip
