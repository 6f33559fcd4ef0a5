"""Turns a completion's growing bytes into text that is safe to stream.

Two things make streaming text subtle. A token may end inside a multi-byte UTF-8 character, so the
incomplete tail waits for the next token. And the text at the end may be the start of a stop sequence,
so it is held back until it either completes the stop sequence (and is dropped) or cannot anymore.
"""

from __future__ import annotations

from dataclasses import dataclass

_MAX_UTF8_CONTINUATION = 3


@dataclass(frozen=True)
class TextStep:
    text: str
    stopped: bool = False


class StreamingText:
    def __init__(self, stop_sequences: tuple[str, ...] = ()) -> None:
        self._stops = tuple(stop for stop in stop_sequences if stop)
        self._text = ""
        self._emitted = 0

    def update(self, completion_bytes: bytes) -> TextStep:
        """Takes the whole completion so far; returns what may be sent now."""
        self._text = _decode_complete_prefix(completion_bytes)
        stop_at = self._find_stop()
        if stop_at is not None:
            return TextStep(self._take_until(stop_at), stopped=True)
        return TextStep(self._take_until(len(self._text) - self._stop_prefix_length()))

    def finish(self, completion_bytes: bytes) -> str:
        """At the end of generation: everything not yet sent, with an incomplete character dropped."""
        self._text = completion_bytes.decode("utf-8", errors="ignore")
        stop_at = self._find_stop()
        return self._take_until(len(self._text) if stop_at is None else stop_at)

    def _take_until(self, end: int) -> str:
        end = max(end, self._emitted)
        piece = self._text[self._emitted : end]
        self._emitted = end
        return piece

    def _find_stop(self) -> int | None:
        # A stop sequence can only complete in text not yet sent, plus its own length of overlap.
        positions = []
        for stop in self._stops:
            found = self._text.find(stop, max(0, self._emitted - len(stop) + 1))
            if found != -1:
                positions.append(found)
        return min(positions) if positions else None

    def _stop_prefix_length(self) -> int:
        """Length of the longest tail of the text that could still grow into a stop sequence."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:length]):
                    longest = length
                    break
        return longest


def _decode_complete_prefix(data: bytes) -> str:
    for cut in range(min(_MAX_UTF8_CONTINUATION, len(data)) + 1):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    # Not an incomplete tail but invalid bytes in the middle: replace them rather than stall.
    return data.decode("utf-8", errors="replace")
