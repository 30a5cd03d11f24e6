"""``manage.py sandbox_prefetch``: allow-listed packages into the read-only cache.

No network: the npm package is packed here with ``npm pack`` and the wheel is written
by hand, then both are installed from their files and started inside a sandbox with
its network off, straight from the cache.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sandbox.isolation import SandboxSpec, isolation_tier, spawn, terminate_tree
from sandbox.policy import command_validate
from sandbox.prefetch import DEFAULT_ALLOWED, PrefetchRefused, cached_argv, spec_parse

BOUND = 30.0
NPM_NAME = "tiny-mcp-probe"
WHEEL_NAME = "tiny_mcp_py"
NODE_MAIN = """
const fs = require("fs");
let write;
try { fs.writeFileSync(__dirname + "/planted", "x"); write = "written"; }
catch (e) { write = e.code; }
console.log(JSON.stringify({ok: "node", write, dir: __dirname}));
"""
PY_MAIN = """
import json, pathlib
def main():
    try:
        (pathlib.Path(__file__).parent / "planted").write_text("x")
        write = "written"
    except OSError as exc:
        write = type(exc).__name__
    print(json.dumps({"ok": "python", "write": write}))
"""


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    settings.MATRIX_DATA_DIR = tmp_path / "data"
    settings.MATRIX_DATA_DIR.mkdir()
    settings.MATRIX_PREFETCH_ALLOWED = [f"npm:{NPM_NAME}", "pypi:tiny-mcp-py"]
    return settings.MATRIX_DATA_DIR


@pytest.fixture(scope="module")
def npm_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``npm pack`` of a one-file package with a ``bin`` (once for the module)."""
    where = tmp_path_factory.mktemp("npm")
    package = where / "pkg"
    package.mkdir()
    manifest = {"name": NPM_NAME, "version": "1.0.0", "bin": {NPM_NAME: "index.js"}}
    (package / "package.json").write_text(json.dumps(manifest))
    (package / "index.js").write_text(NODE_MAIN)
    subprocess.run(
        ["npm", "pack", "--pack-destination", str(where)],
        cwd=package,
        check=True,
        capture_output=True,
        timeout=BOUND,
    )
    return where / f"{NPM_NAME}-1.0.0.tgz"


def wheel(where: Path) -> Path:
    """A minimal wheel with one console script, written by hand."""
    info = f"{WHEEL_NAME}-1.0.dist-info"
    files = {
        f"{WHEEL_NAME}/__init__.py": PY_MAIN,
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: tiny-mcp-py\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[console_scripts]\ntiny-mcp-py = {WHEEL_NAME}:main\n",
    }
    record = io.StringIO()
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.write(f"{name},sha256={digest.decode()},{len(text.encode())}\n")
    record.write(f"{info}/RECORD,,\n")
    path = where / f"{WHEEL_NAME}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {**files, f"{info}/RECORD": record.getvalue()}.items():
            archive.writestr(name, text)
    return path


def prefetch(spec: str) -> list[str]:
    """Run the command; the start commands it printed."""
    out = io.StringIO()
    call_command("sandbox_prefetch", spec, stdout=out)
    lines = out.getvalue().splitlines()
    return [line.split("start command: ", 1)[1] for line in lines if "start command: " in line]


def start_in_sandbox(start_command: str, scratch: Path) -> dict[str, Any]:
    """Validate the printed command like a sandbox creation would, run it offline."""
    spec = SandboxSpec(argv=command_validate(start_command), scratch_dir=scratch)

    async def scenario() -> bytes:
        proc = await spawn(spec, tier=isolation_tier())
        assert proc.stdout is not None
        try:
            return await asyncio.wait_for(proc.stdout.readline(), BOUND)
        finally:
            await terminate_tree(proc)

    return json.loads(asyncio.run(scenario()))


def assert_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            assert not path.stat().st_mode & 0o222, path


def test_npm_tarball_installs_read_only_and_starts_offline(data_dir, npm_tarball):
    commands = prefetch(str(npm_tarball))
    # each package in a folder of its own: <cache>/npm/<name>/node_modules/<name>
    package = data_dir / "sandbox-cache" / "npm" / NPM_NAME / "node_modules" / NPM_NAME
    assert commands == [f"node {package / 'index.js'}"]
    assert_read_only(data_dir / "sandbox-cache")
    report = start_in_sandbox(commands[0], data_dir / "mcp" / "sbx_npm")
    assert report["ok"] == "node"
    assert report["write"] in ("EROFS", "EACCES")
    assert not (package / "planted").exists()


def test_wheel_installs_into_its_own_venv_and_starts_offline(data_dir, tmp_path):
    commands = prefetch(str(wheel(tmp_path)))
    venv = data_dir / "sandbox-cache" / "pypi" / "tiny-mcp-py"
    assert commands == [f"{venv / 'bin' / 'python'} {venv / 'bin' / 'tiny-mcp-py'}"]
    assert_read_only(venv)
    report = start_in_sandbox(commands[0], data_dir / "mcp" / "sbx_py")
    assert report == {"ok": "python", "write": "OSError"}


def test_a_second_prefetch_keeps_the_first_and_relocks(data_dir, tmp_path, npm_tarball):
    prefetch(str(npm_tarball))
    prefetch(str(wheel(tmp_path)))
    cache = data_dir / "sandbox-cache"
    assert (cache / "npm" / NPM_NAME / "node_modules" / NPM_NAME / "index.js").is_file()
    assert_read_only(cache)


@pytest.mark.parametrize(
    "spec", ["npm:left-pad", "@evil/server", "pypi:requests", "mcp-server-time", "lodash@4"]
)
def test_specs_off_the_allow_list_are_refused_and_nothing_is_installed(data_dir, spec):
    with pytest.raises(CommandError, match="not on the prefetch allow-list"):
        call_command("sandbox_prefetch", spec)
    assert not (data_dir / "sandbox-cache" / "npm").exists()
    assert not (data_dir / "sandbox-cache" / "pypi").exists()


def test_an_archive_is_judged_by_the_name_inside(data_dir, tmp_path, settings, npm_tarball):
    renamed = tmp_path / "mcp-server-time.tgz"
    shutil.copy(npm_tarball, renamed)
    settings.MATRIX_PREFETCH_ALLOWED = ["mcp-server-time"]
    with pytest.raises(CommandError, match=f"'{NPM_NAME}' is not on"):
        call_command("sandbox_prefetch", str(renamed))


def test_default_allow_list_is_the_catalogs_servers(settings):
    settings.MATRIX_PREFETCH_ALLOWED = []
    assert "npm:@modelcontextprotocol/server-everything" in DEFAULT_ALLOWED
    assert spec_parse("@modelcontextprotocol/server-memory@2026.8.31").name == (
        "@modelcontextprotocol/server-memory"
    )
    assert spec_parse("mcp-server-time==2025.1").ecosystem == "pypi"
    assert spec_parse("pypi:mcp-server-git>=1").name == "mcp-server-git"
    with pytest.raises(PrefetchRefused, match="only npm tarballs"):
        spec_parse(__file__)


def test_npx_of_a_prefetched_package_starts_from_the_cache(data_dir, npm_tarball):
    prefetch(str(npm_tarball))
    folder = data_dir / "sandbox-cache" / "npm" / NPM_NAME
    package = (folder / "node_modules" / NPM_NAME).resolve()
    started = ["node", str(package / "index.js"), "--flag"]
    assert cached_argv(["npx", "-y", NPM_NAME, "--flag"]) == started
    assert cached_argv(["/usr/bin/npx", "--yes", f"{NPM_NAME}@1.0.0", "--flag"]) == started
    assert cached_argv(["npx", "-y", f"{NPM_NAME}@2.0.0"]) is None  # another version: npx's
    assert cached_argv(["npx", "-y", "not-prefetched"]) is None
    assert cached_argv(["node", "x.js"]) is None
    # The rewritten command runs offline in a sandbox.
    report = start_in_sandbox(" ".join(started[:2]), data_dir / "mcp" / "sbx_npx")
    assert report["ok"] == "node"


def test_uvx_of_a_prefetched_package_starts_from_the_cache(data_dir, tmp_path):
    prefetch(str(wheel(tmp_path)))
    venv = data_dir / "sandbox-cache" / "pypi" / "tiny-mcp-py"
    started = [str(venv / "bin" / "python"), str(venv / "bin" / "tiny-mcp-py"), "--x"]
    assert cached_argv(["uvx", "tiny-mcp-py", "--x"]) == started
    assert cached_argv(["uvx", "tiny-mcp-py==1.0", "--x"]) == started
    assert cached_argv(["uvx", "tiny-mcp-py==9.9"]) is None
    assert cached_argv(["uvx", "absent-server"]) is None
    report = start_in_sandbox(" ".join(started[:2]), data_dir / "mcp" / "sbx_uvx")
    assert report == {"ok": "python", "write": "OSError"}
