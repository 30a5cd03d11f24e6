"""``manage.py rotate_secret_key``: a new primary key in the key file, every secret
re-encrypted under it and still readable, servers picking the new ring up without a
restart, and the older keys retired only when nothing needs them."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import ProviderCredential
from accounts.principals import Actor
from accounts.services.providers import provider_secret_read, provider_upsert
from matrixcloud.lib import crypto
from tests import factories
from tests.factories import actor_of
from tests.sandbox_processes import REPO

pytestmark = pytest.mark.django_db

cast = factories.cast
OLD_KEY = "0a" * 32
SECRETS = {f"provider{n}": f"secret-value-{n:04d}-abcdef" for n in range(7)}


@pytest.fixture
def keyfile(settings: Any, tmp_path: Path) -> Path:
    """A key file holding one key, as ``serve`` creates it, used as the ring."""
    path = tmp_path / "secret.key"
    path.write_text(OLD_KEY + "\n")
    path.chmod(0o600)
    settings.MATRIX_ENCRYPTION_KEYFILE = path
    return path


@pytest.fixture
def stored(cast: Any, keyfile: Path) -> dict[str, str]:
    """Credentials in two workspaces, encrypted under the old key; name → id."""
    ids = {}
    for n, (provider, secret) in enumerate(SECRETS.items()):
        workspace = cast.workspace if n % 2 else cast.other_workspace
        credential = provider_upsert(provider=provider, secret=secret, actor=actor_of(workspace))
        ids[provider] = credential.pk
    return ids


def raw_values() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, secret FROM accounts_providercredential")
        return dict(cursor.fetchall())


def plaintexts() -> dict[str, str]:
    return {c.provider: c.secret for c in ProviderCredential.objects.all()}


def rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_secret_key", *args, stdout=out)
    return out.getvalue()


def test_rotation_keeps_every_secret_readable_under_a_new_key(stored, keyfile):
    old_id = crypto.key_id(OLD_KEY)
    before = raw_values()
    assert {value.split(":")[1] for value in before.values()} == {old_id}

    output = rotate("--batch", "3")  # several batches

    keys = crypto.parse_keys(keyfile.read_text())
    assert len(keys) == 2
    assert keys[1] == OLD_KEY
    new_id = crypto.key_id(keys[0])
    assert f"new primary key {new_id}" in output
    assert f"re-encrypted {len(SECRETS)} values under key {new_id}; 0 already used it" in output
    after = raw_values()
    assert {value.split(":")[1] for value in after.values()} == {new_id}
    assert all(after[pk] != before[pk] for pk in before)
    for value in after.values():
        assert not any(secret in value for secret in SECRETS.values())
    assert plaintexts() == SECRETS
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"


def test_a_second_run_finds_nothing_to_do_then_a_third_rotates_again(stored, keyfile):
    rotate()
    again = rotate("--reencrypt-only")
    assert f"re-encrypted 0 values under key {crypto.key_ring().primary_id}; 7 already" in again
    rotate()
    assert len(crypto.parse_keys(keyfile.read_text())) == 3
    assert plaintexts() == SECRETS


def test_retiring_the_old_key_leaves_only_the_new_one(stored, keyfile, cast):
    old_token = raw_values()[stored["provider0"]]

    output = rotate("--retire-old")

    keys = crypto.parse_keys(keyfile.read_text())
    assert len(keys) == 1
    assert f"retired 1 older key(s): {crypto.key_id(OLD_KEY)}" in output
    assert plaintexts() == SECRETS
    # What the old key wrote is now unreadable: it raises, it is never returned as is.
    with pytest.raises(crypto.KeyUnavailable):
        crypto.decrypt(old_token)
    assert (
        provider_secret_read(
            actor=Actor.system(cast.other_workspace), provider="provider0", purpose="t"
        )
        == SECRETS["provider0"]
    )


def test_a_value_no_key_opens_stops_the_rotation_before_retiring(stored, keyfile, cast):
    foreign = crypto._ring_for(("ff" * 32,)).encrypt("from another installation")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_providercredential SET secret = %s WHERE id = %s",
            [foreign, stored["provider3"]],
        )

    with pytest.raises(CommandError) as raised:
        rotate("--retire-old")

    assert "1 values cannot be decrypted with any key of the ring" in str(raised.value)
    assert f"accounts.ProviderCredential:{stored['provider3']}.secret" in str(raised.value)
    assert len(crypto.parse_keys(keyfile.read_text())) == 2  # nothing retired
    assert raw_values()[stored["provider3"]] == foreign  # left as it was
    readable = {p: s for p, s in SECRETS.items() if p != "provider3"}
    others = ProviderCredential.objects.exclude(pk=stored["provider3"])
    assert {c.provider: c.secret for c in others} == readable


def test_an_environment_ring_cannot_be_rotated_by_the_command(stored, settings):
    settings.MATRIX_ENCRYPTION_KEYFILE = None
    settings.MATRIX_ENCRYPTION_KEYS = ["1b" * 32, OLD_KEY]  # the operator put a new key first
    with pytest.raises(CommandError, match="the key ring comes from MATRIXCLOUD_SECRET_KEY"):
        rotate()
    output = rotate("--reencrypt-only")
    assert f"re-encrypted 7 values under key {crypto.key_id('1b' * 32)}" in output
    settings.MATRIX_ENCRYPTION_KEYS = ["1b" * 32]
    assert plaintexts() == SECRETS
    with pytest.raises(CommandError, match="remove the older keys there"):
        rotate("--reencrypt-only", "--retire-old")


def test_a_running_process_follows_the_key_file_without_a_restart(stored, keyfile, tmp_path):
    """Another process keeps its ring in memory: after a rotation it decrypts what the new
    key wrote (it re-reads the changed file) and encrypts with the new primary."""
    script = (
        "import sys, django; django.setup()\n"
        "from django.conf import settings\n"
        "from matrixcloud.lib import crypto\n"
        f"settings.MATRIX_ENCRYPTION_KEYFILE = {str(keyfile)!r}\n"
        "print(crypto.key_ring().primary_id, flush=True)\n"
        "for line in sys.stdin:\n"
        "    print(crypto.decrypt(line.strip()), crypto.key_ring().primary_id, flush=True)\n"
    )
    env = {"DJANGO_SETTINGS_MODULE": "matrixcloud.settings", "PATH": "/usr/bin:/bin"}
    env["MATRIX_RUNTIME_DATA_DIR"] = str(tmp_path / "data")
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == crypto.key_id(OLD_KEY)
        rotate()
        new_id = crypto.key_ring().primary_id
        child.stdin.write(raw_values()[stored["provider5"]] + "\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == [SECRETS["provider5"], new_id]
    finally:
        child.kill()
        child.wait(timeout=10)
