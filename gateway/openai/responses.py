"""The gateway's GenerateResponse stream as OpenAI objects: chat.completion, text_completion and their chunks.

Pure: one CompletionWriter per request turns each gateway message into the chunks a stream sends, or
gathers them into the one object a non-streaming answer is.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from meshserve.gateway.v1 import gateway_pb2 as pb

# The gateway's finish reasons as OpenAI names them; the job runner stores them the same way.
FINISH_REASONS = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}


@dataclass
class CompletionWriter:
    chat: bool
    include_usage: bool = False
    # Only for text completions: where the completion starts, for logprobs' text_offset.
    prompt_chars: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    model: str = ""
    _text: list[str] = field(default_factory=list)
    _logprobs: list[pb.TokenLogprob] = field(default_factory=list)
    _finish_reason: str | None = None
    _usage: dict[str, int] | None = None
    _role_sent: bool = False
    _offset: int = 0

    @property
    def object_id(self) -> str:
        return f"{'chatcmpl' if self.chat else 'cmpl'}-{self.id}"

    def chunks(self, message: pb.GenerateResponse, with_logprobs: bool) -> list[dict[str, Any]]:
        """The stream chunks one gateway message becomes, in order."""
        self._note(message)
        events = []
        if self.chat and not self._role_sent:
            events.append(self._chunk({"role": "assistant", "content": ""}, None, None))
            self._role_sent = True
        logprobs = self._logprobs_of(list(message.logprobs)) if with_logprobs else None
        if message.text or logprobs:
            events.append(self._chunk_with_text(message.text, logprobs, None))
        if self._finish_reason is not None:
            events.append(self._chunk_with_text("", None, self._finish_reason))
            if self.include_usage:
                events.append({**self._header(True), "choices": [], "usage": self._usage})
        return events

    def gather(self, message: pb.GenerateResponse) -> None:
        """One message of a non-streaming answer."""
        self._note(message)
        self._text.append(message.text)
        self._logprobs.extend(message.logprobs)

    def completed(self, with_logprobs: bool) -> dict[str, Any]:
        """The whole answer, once every message is gathered."""
        text = "".join(self._text)
        logprobs = self._logprobs_of(self._logprobs) if with_logprobs else None
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None}}
        else:
            choice = {"index": 0, "text": text}
        choice.update(logprobs=logprobs, finish_reason=self._finish_reason)
        return {**self._header(False), "choices": [choice], "usage": self._usage}

    def outcome(self) -> tuple[str, str, int, int] | None:
        """The served model, finish reason and token counts once the last message is in, for the trace."""
        if self._finish_reason is None or self._usage is None:
            return None
        usage = self._usage
        return self.model, self._finish_reason, usage["prompt_tokens"], usage["completion_tokens"]

    def _note(self, message: pb.GenerateResponse) -> None:
        self.model = message.model or self.model
        if message.finish_reason in FINISH_REASONS:
            self._finish_reason = FINISH_REASONS[message.finish_reason]
            usage = message.usage
            self._usage = {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            }

    def _header(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.object_id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}  # fmt: skip

    def _chunk_with_text(self, text: str, logprobs: dict | None, finish: str | None) -> dict[str, Any]:
        if self.chat:
            return self._chunk({"content": text} if text or logprobs else {}, logprobs, finish)
        chunk = {**self._header(True), "choices": [{"index": 0, "text": text, "logprobs": logprobs,
                                                    "finish_reason": finish}]}  # fmt: skip
        return self._with_usage_field(chunk)

    def _chunk(self, delta: dict[str, Any], logprobs: dict | None, finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return self._with_usage_field({**self._header(True), "choices": [choice]})

    def _with_usage_field(self, chunk: dict[str, Any]) -> dict[str, Any]:
        # With include_usage, OpenAI gives every chunk a usage field, null until the usage chunk.
        return {**chunk, "usage": None} if self.include_usage else chunk

    def _logprobs_of(self, entries: list[pb.TokenLogprob]) -> dict[str, Any] | None:
        if not entries:
            return None
        if self.chat:
            return {"content": [_chat_logprob(entry) for entry in entries], "refusal": None}
        offsets = []
        for entry in entries:
            offsets.append(self.prompt_chars + self._offset)
            self._offset += len(entry.token)
        return {
            "tokens": [entry.token for entry in entries],
            "token_logprobs": [entry.logprob for entry in entries],
            "top_logprobs": [{top.token: top.logprob for top in entry.top_logprobs} for entry in entries],
            "text_offset": offsets,
        }


def _chat_logprob(entry: pb.TokenLogprob) -> dict[str, Any]:
    top = [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token_bytes)} for t in entry.top_logprobs]
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.token_bytes), "top_logprobs": top}
