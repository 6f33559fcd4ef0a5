from services.inference.core.text_stream import StreamingText


def feed(stream: StreamingText, pieces: list[bytes]) -> list[str]:
    completion, out = b"", []
    for piece in pieces:
        completion += piece
        step = stream.update(completion)
        out.append(step.text)
        if step.stopped:
            break
    return out


def test_plain_text_streams_as_it_grows() -> None:
    assert feed(StreamingText(), [b"Hello", b" world", b"!"]) == ["Hello", " world", "!"]


def test_a_character_split_across_tokens_waits_for_its_last_byte() -> None:
    euro = "€".encode()  # three bytes
    assert feed(StreamingText(), [b"a" + euro[:1], euro[1:2], euro[2:] + b"b"]) == ["a", "", "€b"]


def test_text_that_may_start_a_stop_sequence_is_held_back_until_it_cannot() -> None:
    stream = StreamingText(("END",))
    assert feed(stream, [b"one E", b"N", b"d"]) == ["one ", "", "ENd"]


def test_a_completed_stop_sequence_ends_the_stream_and_is_not_returned() -> None:
    stream = StreamingText(("END",))
    completion = b"one E"
    assert stream.update(completion).text == "one "
    step = stream.update(completion + b"ND and more")
    assert step.stopped and step.text == ""


def test_stop_sequence_inside_one_token() -> None:
    step = StreamingText(("\n\n",)).update(b"first line\n\nsecond")
    assert step.stopped and step.text == "first line"


def test_the_earliest_of_several_stop_sequences_wins() -> None:
    step = StreamingText(("world", "lo")).update(b"hello world")
    assert step.stopped and step.text == "hel"


def test_finish_releases_held_back_text_and_drops_an_incomplete_character() -> None:
    stream = StreamingText(("END",))
    completion = b"tail E"
    assert stream.update(completion).text == "tail "
    assert stream.finish(completion + "€".encode()[:2]) == "E"


def test_invalid_bytes_in_the_middle_are_replaced_rather_than_stalling() -> None:
    assert StreamingText().update(b"a\xff\xfe\xfd\xfcb").text.endswith("b")
