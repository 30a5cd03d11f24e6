"""Properties of JSON request bodies (``matrixcloud/api/parsers.py``) and, through a real
endpoint, of what the API does with bodies no store can hold.

Found by schemathesis on PostgreSQL (tests/system/test_fuzz_api.py): a ``\\u0000`` inside a
stored JSON value (a model profile's ``metadata``) was a 500 (PostgreSQL's jsonb and
text refuse NUL); a lone surrogate cannot be encoded as UTF-8 at all, and nesting past
the parser's recursion limit raised RecursionError. Each is now the 400 error shape.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from matrixcloud.api.parsers import LenientJSONParser
from matrixcloud.errors import BadRequest
from tests.factories import bearer, signup
from tests.properties import bounded

BOUNDED = bounded(300)
BAD_CHARS = ["\x00", "\ud800", "\udfff", "\udbff"]
TEXT = st.one_of(
    st.text(max_size=10),
    st.tuples(st.text(max_size=4), st.sampled_from(BAD_CHARS), st.text(max_size=4)).map("".join),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)


def parse(raw: bytes) -> Any:
    return LenientJSONParser().parse(io.BytesIO(raw))


def storable(value: Any) -> bool:
    """What PostgreSQL can hold: valid UTF-8 and no NUL anywhere (keys included)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text and "\\u0000" not in text


@BOUNDED
@given(st.dictionaries(TEXT, JSON, max_size=5), st.booleans())
def test_bodies_parse_to_storable_data_or_are_refused(body: dict[str, Any], ascii: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii).encode("utf-8", "surrogatepass")
    try:
        parsed = parse(raw)
    except BadRequest as exc:
        refusal = exc
    else:
        assert storable(parsed)
        assert parsed == {key: value for key, value in body.items() if value is not None}
        return
    assert refusal.http_status == 400
    assert refusal.message.startswith("invalid JSON body: ")
    assert not storable(body)


@BOUNDED
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_are_refused(raw: bytes) -> None:
    try:
        parse(raw)
    except BadRequest as exc:
        assert exc.http_status == 400  # noqa: PT017 - the refusal's shape is the property


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deep_nesting_is_refused_not_crashed(depth: int) -> None:
    raw = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    if depth <= 100:
        assert parse(raw) == {"a": json.loads(b"[" * depth + b"]" * depth)}
        return
    with pytest.raises(BadRequest, match=r"^invalid JSON body: nested too deeply$"):
        parse(raw)


def test_escaped_backslash_u_is_plain_text() -> None:
    """``"\\\\u0000"`` is a backslash and five characters, not a NUL: accepted."""
    assert parse(rb'{"a": "\\u0000", "b": "\\ud800"}') == {"a": "\\u0000", "b": "\\ud800"}
    assert parse('{"a": "\U0001f600 \\ud83d\\ude00"}'.encode()) == {"a": "\U0001f600 \U0001f600"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        rb'{"external_id": "a/b", "metadata": {"k": "x\u0000y"}}',
        rb'{"external_id": "a/b", "metadata": {"x\u0000": 1}}',
        rb'{"external_id": "a/b", "display_name": "\ud800"}',
        rb'{"external_id": "a/b", "metadata": {"k": ["\udfff"]}}',
        b'{"external_id": "a/b", "metadata": {"k": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
    ],
)
def test_the_api_answers_400_for_bodies_no_store_can_hold(api: APIClient, body: bytes) -> None:
    """Regression: on PostgreSQL the first two were 500s (jsonb refuses \\u0000)."""
    _, _, token = signup("Nul Tester", "nul@example.test", "Nulls")
    response = api.generic(
        "POST", "/v1/model-profiles", body, content_type="application/json", **bearer(token)
    )
    assert response.status_code == 400, response.content
    assert response.json()["status"] == 400
    assert response.json()["error"].startswith("invalid JSON body: ")
    listed = api.get("/v1/model-profiles", **bearer(token))
    assert listed.status_code == 200
    assert listed.json()["profiles"] == []
