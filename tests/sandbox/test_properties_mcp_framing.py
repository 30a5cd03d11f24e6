"""Properties of the MCP stdio framing (``sandbox/mcp/framing.py``) and the stderr tap.

Arbitrary bytes, huge lines and partial lines never crash the reader or make it hold
more than its bounds; valid messages survive any chunking; what we write is always one
line of valid UTF-8 JSON. Bounded: a fixed number of derandomized examples each.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from sandbox.mcp.framing import (
    EDGE_BYTES,
    LineFramer,
    Oversized,
    decode_messages,
    encode_message,
    is_jsonrpc,
)
from sandbox.mcp.stderr import StderrTap
from tests.properties import bounded

BOUNDED = bounded(200, HealthCheck.data_too_large)

JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
MESSAGES = st.one_of(
    st.builds(lambda i, r: {"jsonrpc": "2.0", "id": i, "result": r}, st.integers(0, 2**31), JSON),
    st.builds(
        lambda m, p: {"jsonrpc": "2.0", "method": m, "params": p},
        st.text(min_size=1, max_size=20),
        st.dictionaries(st.text(max_size=8), JSON, max_size=4),
    ),
    st.builds(
        lambda i, c, t: {"jsonrpc": "2.0", "id": i, "error": {"code": c, "message": t}},
        st.integers(0, 2**31),
        st.integers(-32768, 0),
        st.text(max_size=20),
    ),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at the given offsets (sorted, deduplicated, within bounds)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def frame_all(framer: LineFramer, pieces: list[bytes]) -> list[bytes | Oversized]:
    out: list[bytes | Oversized] = []
    for piece in pieces:
        out.extend(framer.feed(piece))
        # The bound: whatever was fed, at most one message of bytes is held.
        assert len(framer._buf) <= framer.max_bytes
        assert len(framer._head) <= EDGE_BYTES
        assert len(framer._tail) <= EDGE_BYTES
    return out


@BOUNDED
@given(
    st.binary(max_size=4096), st.lists(st.integers(min_value=0), max_size=20), st.integers(1, 600)
)
def test_any_bytes_any_chunking_frame_like_a_line_split(
    data: bytes, cuts: list[int], max_bytes: int
) -> None:
    framer = LineFramer(max_bytes)
    frames = frame_all(framer, chunked(data, cuts))
    lines = data.split(b"\n")[:-1]  # the last piece is an unfinished line, held back
    assert len(frames) == len(lines)
    for frame, line in zip(frames, lines, strict=True):
        if len(line) <= max_bytes:
            assert frame == line
            continue
        assert isinstance(frame, Oversized)
        assert frame.size == len(line)
        assert line.startswith(frame.head)
        assert line.endswith(frame.tail)
        assert frame.tail == line[-EDGE_BYTES:]
        if max_bytes >= EDGE_BYTES:
            assert frame.head == line[:EDGE_BYTES]
    for frame in frames:
        if isinstance(frame, bytes):
            assert decode_messages(frame) is not None  # never raises, whatever the bytes


@BOUNDED
@given(st.lists(MESSAGES, min_size=1, max_size=6), st.lists(st.integers(min_value=0), max_size=30))
def test_valid_messages_survive_any_chunking(
    messages: list[dict[str, Any]], cuts: list[int]
) -> None:
    noise = b"server banner: starting\n\n"
    stream = noise + b"".join(encode_message(message) for message in messages)
    framer = LineFramer(1 << 20)
    decoded = [
        message
        for frame in frame_all(framer, chunked(stream, cuts))
        if isinstance(frame, bytes)
        for message in decode_messages(frame)
    ]
    assert decoded == messages


@BOUNDED
@given(st.integers(0, 2**31), st.integers(1, 5), st.lists(st.integers(min_value=0), max_size=10))
def test_an_oversized_answer_still_names_its_request(
    request_id: int, factor: int, cuts: list[int]
) -> None:
    limit = 1024
    message = {"jsonrpc": "2.0", "id": request_id, "result": {"text": "x" * (limit * factor)}}
    line = encode_message(message)
    frames = frame_all(LineFramer(limit), chunked(line + encode_message(message), cuts))
    assert len(frames) == 2
    for frame in frames:
        assert isinstance(frame, Oversized)
        assert frame.size == len(line) - 1
        assert frame.request_id() == request_id


def test_a_huge_line_in_small_chunks_stays_bounded() -> None:
    framer = LineFramer(4096)
    held = 0
    for _ in range(2000):  # 2000 x 8 KiB = 16 MiB without a newline
        assert framer.feed(b"y" * 8192) == []
        held = max(held, len(framer._buf))
    (frame,) = framer.feed(b"\n")
    assert isinstance(frame, Oversized)
    assert frame.size == 2000 * 8192
    assert held <= 4096


@BOUNDED
@given(st.binary(max_size=200))
def test_decode_never_raises(line: bytes) -> None:
    for message in decode_messages(line):
        assert is_jsonrpc(message)


SURROGATE_ESCAPES = st.sampled_from(["\\ud800", "\\uDFFF", "\\ud83d\\ude00", "\\ud83d", "x"])


@BOUNDED
@given(st.lists(SURROGATE_ESCAPES, max_size=6).map("".join), st.booleans())
def test_decoded_messages_are_always_valid_unicode(escaped: str, as_key: bool) -> None:
    """Regression: a server's ``"\\ud800"`` decoded to a lone surrogate, which no JSON
    answer could encode (DRF's renderer raised: a 500 for the tool call)."""
    inner = f'{{"{escaped}": 1}}' if as_key else f'"{escaped}"'
    line = f'{{"jsonrpc": "2.0", "id": 7, "result": {{"content": [{inner}]}}}}'.encode()
    (message,) = decode_messages(line)
    json.dumps(message, ensure_ascii=False).encode("utf-8")  # would raise on a lone half
    assert message["id"] == 7
    expected = json.loads(line)["result"]["content"][0]
    text = next(iter(expected)) if as_key else expected
    clean = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    got = message["result"]["content"][0]
    assert (next(iter(got)) if as_key else got) == clean


def test_decode_survives_absurd_nesting_and_huge_numbers() -> None:
    assert decode_messages(b"[" * 100_000 + b"]" * 100_000) == []
    assert decode_messages(b'{"jsonrpc": "2.0", "id": ' + b"9" * 10_000 + b', "result": 1}') == []


@BOUNDED
@given(MESSAGES)
def test_encoded_messages_are_one_utf8_json_line(message: dict[str, Any]) -> None:
    line = encode_message(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line.decode("utf-8")) == message


@BOUNDED
@given(
    st.lists(st.sampled_from(["\ud800", "\udfff", "\x00", "a", "\U0001f600"]), max_size=6).map(
        "".join
    )
)
def test_encoding_a_lone_surrogate_does_not_crash(text: str) -> None:
    """Regression: ``encode_message`` raised UnicodeEncodeError for a lone surrogate (json
    escapes are decoded into one), so a request that carried one crashed the writer."""
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"arguments": {"s": text}},
    }
    line = encode_message(message)
    assert line.count(b"\n") == 1
    # What any JSON reader makes of the escaped form (two halves in a row read as a pair).
    assert json.loads(line.decode("utf-8")) == json.loads(json.dumps(message))


# --- stderr -----------------------------------------------------------------------------
@BOUNDED
@given(
    st.binary(max_size=3000),
    st.lists(st.integers(min_value=0), max_size=20),
    st.integers(1, 300),
    st.integers(1, 5),
)
def test_stderr_tap_stays_bounded(
    data: bytes, cuts: list[int], max_line: int, per_second: int
) -> None:
    lines: list[str] = []
    tap = StderrTap(
        ring_bytes=512,
        on_line=lines.append,
        lines_per_second=per_second,
        max_line_bytes=max_line,
        clock=lambda: 0.0,  # one window: the rate bound must hold
    )
    for piece in chunked(data, cuts):
        tap.feed(piece)
        assert len(tap._ring) <= 512
        assert len(tap._partial) <= max_line
    tap.finish()
    assert tap.tail() == data[-512:].decode("utf-8", errors="replace").strip()
    streamed = [line for line in lines if not line.startswith("(")]
    assert len(streamed) <= per_second
    for line in streamed:
        assert len(line) <= max_line + 2  # " …" marks a cut line
    if tap.suppressed_total:
        assert lines[-1] == (
            f"({tap.suppressed_total} more stderr lines not streamed: over {per_second}/s)"
        )
