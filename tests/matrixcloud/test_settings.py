"""Start-up configuration: a bad value refuses to start with a message naming it, and
keys generated into a new data dir are private and stable.

Each case starts a fresh interpreter (``django.setup()``) with a clean environment, as
``serve`` would be started.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

SETUP = "import django; django.setup()"


def start(env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``django.setup()`` in a new interpreter with only ``env`` and a data dir set."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data_dir.parent),
        "DJANGO_SETTINGS_MODULE": "matrixcloud.settings",
        "MATRIX_RUNTIME_DATA_DIR": str(data_dir),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", SETUP],
        cwd=django_settings.BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_clean_start_succeeds(tmp_path):
    result = start({}, tmp_path / "data")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MATRIX_RUNTIME_MODE": "bogus"}, "MATRIX_RUNTIME_MODE='bogus' is not one of"),
        ({"MATRIX_RUNTIME_MODE": "production"}, "MATRIX_RUNTIME_MODE='production'"),
        ({"MATRIX_RUNTIME_MAX_TTL_SECONDS": "abc"}, "MATRIX_RUNTIME_MAX_TTL_SECONDS='abc'"),
        ({"MATRIX_RUNTIME_MAX_TTL_SECONDS": "0"}, "MATRIX_RUNTIME_MAX_TTL_SECONDS=0 is below"),
        ({"MATRIX_RUNTIME_MAX_CONCURRENT_JOBS": "x"}, "MATRIX_RUNTIME_MAX_CONCURRENT_JOBS='x'"),
        ({"MATRIX_RUNTIME_PORT": "70000"}, "MATRIX_RUNTIME_PORT=70000 is above"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL: only PostgreSQL URLs are supported"),
        ({"MATRIX_RUNTIME_DEBUG": "maybe"}, "MATRIX_RUNTIME_DEBUG='maybe' is not a boolean"),
    ],
)
def test_bad_value_refuses_to_start(tmp_path, env, message):
    result = start(env, tmp_path / "data")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_unwritable_data_dir_refuses_to_start(tmp_path):
    result = start({}, Path("/proc/nope"))
    assert result.returncode != 0
    assert "cannot create the data dir /proc/nope" in result.stderr


def test_new_data_dir_gets_private_stable_keys(tmp_path):
    data_dir = tmp_path / "data"
    first = start({}, data_dir)
    assert first.returncode == 0, first.stderr
    assert "created a new encryption key" in first.stderr
    keys = {name: (data_dir / name).read_text() for name in ("secret.key", "django-secret.key")}
    for name, key in keys.items():
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        assert len(key.strip()) == 64, name
    second = start({}, data_dir)
    assert second.returncode == 0, second.stderr
    assert "created a new" not in second.stderr
    assert {name: (data_dir / name).read_text() for name in keys} == keys
    assert keys["secret.key"] != keys["django-secret.key"]


def test_configured_keys_are_not_written(tmp_path):
    data_dir = tmp_path / "data"
    result = start({"MATRIXCLOUD_SECRET_KEY": "a" * 64, "DJANGO_SECRET_KEY": "b" * 64}, data_dir)
    assert result.returncode == 0, result.stderr
    assert not (data_dir / "secret.key").exists()
    assert not (data_dir / "django-secret.key").exists()
