"""Properties of the Hugging Face id parser (``models_registry/sources.py``).

Valid ids round-trip however they are prefixed, ``hf:`` is never doubled, and junk is
refused with the API's 422 (never another exception, never a ref the Hub client would
refuse later). Bounded: a fixed number of derandomized examples per property.
"""

from __future__ import annotations

import pytest
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from hypothesis import given
from hypothesis import strategies as st

from matrixcloud.api.exceptions import exception_handler
from models_registry.sources import (
    DEFAULT_REVISION,
    ModelIdInvalid,
    ModelRef,
    parse_model_id,
    strip_hf_prefix,
)
from tests.properties import bounded

BOUNDED = bounded(300)

# A part of a Hub repo id: letters, digits, '-', '_', '.'; no '--' or '..'; neither end
# a '-' or '.'; not ending '.git'.
PART = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,30}[A-Za-z0-9])?", fullmatch=True).filter(
    lambda part: "--" not in part and ".." not in part and not part.endswith(".git")
)
PREFIX = st.lists(st.sampled_from(["hf:", "HF:", "huggingface:", "HuggingFace:", " hf: "]))
# A branch, tag or commit: it names a file of the cache, so no "..", "//" or trailing
# "." or "/" (those are refused: test_revisions_that_could_name_a_path_are_refused).
REVISION = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,20}", fullmatch=True).filter(
    lambda rev: ".." not in rev and "//" not in rev and not rev.endswith((".", "/"))
)
JUNK = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.one_of(
            st.sampled_from(["hf:", "huggingface:", "/", "@", "..", "--", " ", ":", "\x00"]),
            PART,
            st.text(max_size=4),
        ),
        max_size=8,
    ).map("".join),
)


def parsed(raw: str, revision: str = "") -> ModelRef | ModelIdInvalid:
    try:
        return parse_model_id(raw, revision)
    except ModelIdInvalid as exc:
        refusal = exc
    response = exception_handler(refusal, {})
    assert response is not None
    assert response.status_code == 422
    assert response.data == {"error": refusal.message, "status": 422}
    assert refusal.message
    return refusal


@BOUNDED
@given(PART, PART, PREFIX, st.one_of(st.none(), REVISION))
def test_valid_ids_round_trip(
    namespace: str, name: str, prefixes: list[str], rev: str | None
) -> None:
    raw = "".join(prefixes) + f"{namespace}/{name}" + (f"@{rev}" if rev else "")
    ref = parsed(raw)
    assert isinstance(ref, ModelRef), raw
    assert (ref.namespace, ref.name) == (namespace, name)
    assert ref.revision == (rev or DEFAULT_REVISION)
    assert ref.repo_id == f"{namespace}/{name}"
    assert ref.model == f"hf:{namespace}/{name}"
    # Its own output parses back to itself, with or without the revision.
    assert parse_model_id(ref.model, ref.revision) == ref
    assert parse_model_id(f"{ref.model}@{ref.revision}") == ref
    assert parse_model_id(ref.repo_id, ref.revision) == ref


@BOUNDED
@given(PART, PART, REVISION, REVISION)
def test_the_argument_revision_wins(
    namespace: str, name: str, embedded: str, given_rev: str
) -> None:
    ref = parse_model_id(f"hf:{namespace}/{name}@{embedded}", given_rev)
    assert ref.revision == given_rev


@BOUNDED
@given(JUNK, st.one_of(st.just(""), REVISION))
def test_anything_parses_or_is_refused_cleanly(raw: str, revision: str) -> None:
    outcome = parsed(raw, revision)
    if isinstance(outcome, ModelIdInvalid):
        return
    # Accepted: exactly what the Hub client accepts, with one hf: in front.
    validate_repo_id(outcome.repo_id)
    assert outcome.model == "hf:" + outcome.repo_id
    assert not outcome.model.lower().startswith(("hf:hf:", "hf:huggingface:"))
    assert ":" not in outcome.repo_id
    assert outcome.revision
    assert parse_model_id(outcome.model, outcome.revision) == outcome


@BOUNDED
@given(JUNK)
def test_prefix_stripping_is_idempotent(raw: str) -> None:
    once = strip_hf_prefix(raw)
    assert strip_hf_prefix(once) == once
    assert not once.lower().startswith(("hf:", "huggingface:"))


@pytest.mark.parametrize(
    "raw",
    [
        "a b/c",
        "../x",
        "x/..",
        "x/y z",
        "ns/na:me",
        "a\x00/b",
        "x/y.git",
        "a--b/c",
        "-x/y",
        "x/" + "y" * 97,
    ],
)
def test_junk_the_hub_would_refuse_is_refused_here(raw: str) -> None:
    """Regression: these were accepted and reached the Hub client, which raised a
    validation error that became a 502 "decode hf response" instead of a 422."""
    with pytest.raises(HFValidationError):
        validate_repo_id(raw.removeprefix("hf:"))
    outcome = parsed(raw)
    assert isinstance(outcome, ModelIdInvalid)
    assert outcome.message.startswith(f'invalid model id "{raw}"')


@pytest.mark.parametrize(
    "revision",
    ["..", "../../x", "a/../b", "/etc", "main/", "x.", "a//b", "a\x00b", "a\nb", "r" * 129],
)
def test_revisions_that_could_name_a_path_are_refused(revision: str) -> None:
    """A revision names a file under the cache's refs/: nothing that could step out of
    it, or hold a NUL or newline, gets that far (a 422 naming it)."""
    outcome = parsed("hf:acme/tiny", revision)
    assert isinstance(outcome, ModelIdInvalid)
    assert outcome.message.startswith("invalid revision ")
