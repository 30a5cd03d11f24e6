"""Properties of the command policy (``sandbox/policy.py``): command_validate, env_validate.

Whatever text or env is thrown at them, the checkers either accept it (and then it obeys
every rule) or refuse it with the API's 422 and a message; they never raise anything
else. Bounded: each property runs a fixed number of derandomized examples.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import strategies as st

from matrixcloud.api.exceptions import exception_handler
from matrixcloud.errors import ApplicationError
from sandbox.isolation import env_name_reserved
from sandbox.policy import (
    ALLOWED_PROGRAMS,
    BLOCKED_TOKENS,
    ENV_NAME_PATTERN,
    FORBIDDEN_CHARACTERS,
    MAX_ENV_ENTRIES,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_TOTAL_CHARS,
    MAX_ENV_VALUE_CHARS,
    SECRET_KEY_PATTERN,
    CommandRejected,
    EnvRejected,
    RawSecretRejected,
    command_split,
    command_validate,
    env_validate,
    go_basename,
    go_quote,
    secret_reference,
)
from tests.properties import bounded

BOUNDED = bounded(300)

# Text rich in what the checker cares about: metacharacters, quotes, blanks, slashes,
# the allowed programs and the blocked tokens, and anything else.
SPECIAL = st.sampled_from([*FORBIDDEN_CHARACTERS, "'", '"', " ", "\t", "/", "\\", "\x00"])
WORDS = st.sampled_from(sorted({*ALLOWED_PROGRAMS, *BLOCKED_TOKENS, "-y", "pkg", "/usr/bin/"}))
PIECES = st.one_of(SPECIAL, WORDS, st.text(max_size=8))
COMMANDS = st.lists(PIECES, max_size=12).map("".join)
SAFE_TOKEN = st.text(
    alphabet=st.characters(
        blacklist_characters="".join(FORBIDDEN_CHARACTERS) + "'\" \t",
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
    ),
    min_size=1,
    max_size=12,
).filter(lambda token: token == token.strip())


@pytest.fixture(autouse=True)
def original_lists(settings: Any) -> None:
    """The original's lists (the configured ones replace them)."""
    settings.MATRIX_ALLOWED_PROGRAMS = []
    settings.MATRIX_BLOCKED_TOKENS = []


def refused(exc: ApplicationError, cls: type[ApplicationError]) -> None:
    """The refusal is the API's 422 in the one error shape, with a message."""
    assert isinstance(exc, cls)
    assert exc.http_status == 422
    response = exception_handler(exc, {})
    assert response is not None
    assert response.status_code == 422
    assert response.data == {"error": exc.message, "status": 422}
    assert isinstance(exc.message, str)
    assert exc.message


def validate(command: str) -> list[str] | CommandRejected:
    try:
        return command_validate(command)
    except CommandRejected as exc:
        refused(exc, CommandRejected)
        return exc


@BOUNDED
@given(COMMANDS)
def test_command_accepted_only_when_every_rule_holds(command: str) -> None:
    outcome = validate(command)
    if isinstance(outcome, CommandRejected):
        return
    assert not any(char in command for char in FORBIDDEN_CHARACTERS)
    assert outcome, "an accepted command has a program"
    assert go_basename(outcome[0]) in ALLOWED_PROGRAMS
    assert not any(go_basename(token) in BLOCKED_TOKENS for token in outcome)
    assert outcome == command_split(command.strip())


@BOUNDED
@given(COMMANDS, st.sampled_from(FORBIDDEN_CHARACTERS), st.integers(min_value=0))
def test_a_metacharacter_anywhere_is_refused_naming_the_first(
    command: str, char: str, where: int
) -> None:
    where %= len(command) + 1
    tainted = command[:where] + char + command[where:]
    outcome = validate(tainted)
    stripped = tainted.strip()  # a newline at either end is trimmed like other blanks
    present = [c for c in FORBIDDEN_CHARACTERS if c in stripped]
    if present:
        assert isinstance(outcome, CommandRejected), tainted
        named = go_quote(present[0], quote="'")
        assert outcome.message == f"command contains forbidden shell metacharacter {named}"
    else:
        assert char in "\n\r"  # only a newline trimmed off an end can vanish
        if isinstance(outcome, list):
            assert outcome == command_split(stripped)
            assert char not in "".join(outcome)


@BOUNDED
@given(
    st.sampled_from(ALLOWED_PROGRAMS),
    st.lists(SAFE_TOKEN, max_size=5),
    st.sampled_from(sorted(BLOCKED_TOKENS)),
    st.sampled_from(["", "/bin/", "/usr/local/bin/", "./"]),
    st.integers(min_value=0),
)
def test_a_blocked_program_anywhere_is_refused(
    program: str, args: list[str], blocked: str, directory: str, where: int
) -> None:
    args = [arg for arg in args if go_basename(arg) not in BLOCKED_TOKENS]
    where %= len(args) + 1
    tokens = [program, *args[:where], directory + blocked, *args[where:]]
    quoted = " ".join(f'"{token}"' for token in tokens)
    for command in (" ".join(tokens), quoted):
        outcome = validate(command)
        assert isinstance(outcome, CommandRejected), command
        assert "blocked token" in outcome.message


@BOUNDED
@given(SAFE_TOKEN, st.lists(SAFE_TOKEN, max_size=5))
def test_a_program_outside_the_list_is_refused(program: str, args: list[str]) -> None:
    outcome = validate(" ".join([program, *args]))
    if go_basename(program) not in ALLOWED_PROGRAMS:
        assert isinstance(outcome, CommandRejected)


@BOUNDED
@given(st.sampled_from(ALLOWED_PROGRAMS), st.lists(SAFE_TOKEN, max_size=6))
def test_safe_commands_round_trip(program: str, args: list[str]) -> None:
    args = [arg for arg in args if go_basename(arg) not in BLOCKED_TOKENS]
    tokens = [program, *args]
    assert validate(" ".join(tokens)) == tokens
    # Quoted, each token may hold blanks and the other quote; the split gives them back.
    spaced = [program, *(arg + " 'x'\t" for arg in args)]
    assert validate(" ".join(f'"{token}"' for token in spaced)) == spaced


@BOUNDED
@given(st.text(max_size=40))
def test_split_never_crashes(command: str) -> None:
    try:
        tokens = command_split(command)
    except CommandRejected as exc:
        refused(exc, CommandRejected)
        message = exc.message
    else:
        assert all(isinstance(token, str) for token in tokens)
        return
    assert message == "unbalanced quote in command"


# --- env -------------------------------------------------------------------------------
KEYS = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
    st.sampled_from(["PATH", "LD_PRELOAD", "PYTHONPATH", "NODE_OPTIONS", "API_KEY", "X"]),
    st.sampled_from(["GITHUB_TOKEN", "db_password", "MY_SECRET", "private_key"]),
    st.text(max_size=12),
)
VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["${secret:gh}", "secret://db", " ${secret:x} ", "${secret:}", "a\x00b"]),
)
ENVS = st.dictionaries(KEYS, VALUES, max_size=8)


def env_outcome(env: Any) -> EnvRejected | None:
    try:
        env_validate(env)
    except EnvRejected as exc:
        refused(exc, EnvRejected)
        return exc
    return None


@BOUNDED
@given(ENVS)
def test_env_accepted_only_when_every_rule_holds(env: dict[str, str]) -> None:
    if env_outcome(env) is not None:
        return
    assert len(env) <= MAX_ENV_ENTRIES
    assert sum(len(k) + len(v) for k, v in env.items()) <= MAX_ENV_TOTAL_CHARS
    for key, value in env.items():
        assert ENV_NAME_PATTERN.fullmatch(key)
        assert len(key) <= MAX_ENV_NAME_CHARS
        assert not env_name_reserved(key), key
        assert "\x00" not in value
        assert len(value) <= MAX_ENV_VALUE_CHARS
        if value and SECRET_KEY_PATTERN.search(key):
            assert secret_reference(value) is not None, (key, value)


@BOUNDED
@given(
    ENVS,
    st.sampled_from(["API_KEY", "GITHUB_TOKEN", "db_password", "Client_Secret", "credentials"]),
    st.text(min_size=1, max_size=20).filter(lambda v: secret_reference(v) is None),
)
def test_a_raw_secret_is_never_accepted(env: dict[str, str], key: str, raw: str) -> None:
    outcome = env_outcome({**env, key: raw})
    assert outcome is not None
    if isinstance(outcome, RawSecretRejected):
        # The refusal never echoes the value: it reads the same whatever the value was
        # (a substring test would trip on a value like ";" that the fixed text contains).
        other = env_outcome({**env, key: "a-different-raw-value"})
        assert isinstance(other, RawSecretRejected)
        assert outcome.message == other.message, "the refusal never echoes the value"


@BOUNDED
@given(ENVS, st.sampled_from(["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "PYTHONPATH"]))
def test_loader_variables_are_refused(env: dict[str, str], key: str) -> None:
    assert env_outcome({**env, key: "/tmp/x"}) is not None


@BOUNDED
@given(
    st.one_of(
        st.dictionaries(st.one_of(st.integers(), st.none(), st.text()), st.text(), max_size=3),
        st.dictionaries(st.text(), st.one_of(st.integers(), st.none(), st.lists(st.text()))),
    )
)
def test_env_of_other_types_is_refused_not_crashed(env: dict[Any, Any]) -> None:
    outcome = env_outcome(env)
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in env.items()):
        assert outcome is not None


def test_limits_hold_at_their_edges() -> None:
    assert env_outcome({"K" * MAX_ENV_NAME_CHARS: "v"}) is None
    assert env_outcome({"K" * (MAX_ENV_NAME_CHARS + 1): "v"}) is not None
    assert env_outcome({"K": "v" * MAX_ENV_VALUE_CHARS}) is None
    assert env_outcome({"K": "v" * (MAX_ENV_VALUE_CHARS + 1)}) is not None
    many = {f"K{i}": "" for i in range(MAX_ENV_ENTRIES + 1)}
    assert env_outcome(many) is not None
    assert settings.MATRIX_ALLOWED_PROGRAMS == []
