"""Pre-fetch allow-listed MCP server packages into a read-only cache sandboxes can use.

``<data>/sandbox-cache/npm`` is one npm prefix (``npm install --prefix``) and
``<data>/sandbox-cache/pypi/<name>`` one virtualenv per Python package. Sandboxes
see the cache read-only at the same path (sandbox/isolation.py), so a server started
as ``node <cache>/npm/node_modules/<pkg>/<bin>`` or ``<venv>/bin/python <script>``
starts with no network. Only packages on the allow-list
(``MATRIX_RUNTIME_PREFETCH_ALLOWED``, default the catalog's MCP servers) are
installed; a local archive (an ``npm pack`` tarball, a wheel) is checked by the
name inside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from matrixcloud.errors import UnprocessableEntity
from sandbox.bubblewrap import prefetch_cache_dir

NPM, PYPI = "npm", "pypi"
# The MCP servers of the catalog (models_registry/data/catalog.json) and their kin.
DEFAULT_ALLOWED = (
    "npm:@modelcontextprotocol/server-everything",
    "npm:@modelcontextprotocol/server-filesystem",
    "npm:@modelcontextprotocol/server-memory",
    "npm:@modelcontextprotocol/server-sequential-thinking",
    "npm:@modelcontextprotocol/server-github",
    "pypi:mcp-server-time",
    "pypi:mcp-server-git",
    "pypi:mcp-server-fetch",
)
INSTALL_TIMEOUT = 600
NPM_VERSION = re.compile(r"^(@[^/@]+/[^@]+|[^@]+)(?:@.*)?$")
PYPI_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class PrefetchRefused(UnprocessableEntity):
    """A package spec that is not on the allow-list, or that cannot be understood."""


class PrefetchFailed(Exception):
    """The installer failed; the message carries its output's tail."""


@dataclass(frozen=True)
class PackageSpec:
    """One thing to install: its ecosystem, its name (for the allow-list), the argument."""

    ecosystem: str
    name: str
    install: str


@dataclass(frozen=True)
class Prefetched:
    """An installed package and the start commands that run it from the cache."""

    spec: PackageSpec
    location: Path
    start_commands: list[str]


def normalize(ecosystem: str, name: str) -> str:
    """npm names compare as written (lower case); PyPI names as PEP 503 says."""
    if ecosystem == PYPI:
        return re.sub(r"[-_.]+", "-", name).lower()
    return name.lower()


def split_ecosystem(raw: str) -> tuple[str, str]:
    """``("npm" | "pypi" | "", rest)`` of ``[npm:|pypi:]rest``."""
    for ecosystem in (NPM, PYPI):
        if raw.startswith(f"{ecosystem}:"):
            return ecosystem, raw[len(ecosystem) + 1 :]
    return "", raw


def allowed_entries() -> list[tuple[str, str]]:
    """``(ecosystem or "", normalized name)`` for each allow-list entry."""
    entries = []
    for raw in settings.MATRIX_PREFETCH_ALLOWED or DEFAULT_ALLOWED:
        ecosystem, name = split_ecosystem(raw)
        entries.append((ecosystem, normalize(ecosystem or NPM, name)))
    return entries


def spec_parse(raw: str) -> PackageSpec:
    """Understand ``[npm:|pypi:]<name>[@version|==version]`` or a local archive path."""
    ecosystem, rest = split_ecosystem(raw)
    if not rest:
        raise PrefetchRefused(f"empty package spec {raw!r}")
    if Path(rest).is_file():
        return archive_spec(Path(rest).resolve(), ecosystem)
    ecosystem = ecosystem or ecosystem_guess(rest)
    pattern = NPM_VERSION if ecosystem == NPM else PYPI_NAME
    match = pattern.match(rest)
    if not match:
        raise PrefetchRefused(f"cannot read a package name from {raw!r}")
    return PackageSpec(ecosystem, match.group(1), rest)


def ecosystem_guess(name: str) -> str:
    """npm for scoped names; else the ecosystem the allow-list gives the name; else npm."""
    if name.startswith("@"):
        return NPM
    bare = PYPI_NAME.match(name)
    for ecosystem, allowed in allowed_entries():
        if ecosystem and bare and normalize(ecosystem, bare.group(1)) == allowed:
            return ecosystem
    return NPM


def archive_spec(path: Path, ecosystem: str) -> PackageSpec:
    """A local ``npm pack`` tarball (name from package.json) or wheel (name from its file)."""
    if path.name.endswith(".whl") and ecosystem in ("", PYPI):
        return PackageSpec(PYPI, path.name.split("-")[0], str(path))
    if path.name.endswith((".tgz", ".tar.gz")) and ecosystem in ("", NPM):
        try:
            with tarfile.open(path) as archive:
                member = archive.extractfile("package/package.json")
                manifest = json.load(member) if member else {}
        except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
            raise PrefetchRefused(f"{path} is not an npm package tarball: {exc}") from exc
        return PackageSpec(NPM, str(manifest.get("name", "")), str(path))
    raise PrefetchRefused(f"{path}: only npm tarballs (.tgz) and wheels (.whl) can be installed")


def check_allowed(spec: PackageSpec) -> None:
    name = normalize(spec.ecosystem, spec.name)
    for ecosystem, allowed in allowed_entries():
        if ecosystem in ("", spec.ecosystem) and name == allowed:
            return
    raise PrefetchRefused(
        f"{spec.ecosystem} package {spec.name!r} is not on the prefetch allow-list "
        "(MATRIX_RUNTIME_PREFETCH_ALLOWED)"
    )


# --- Installing ------------------------------------------------------------------------


def prefetch(raw: str) -> Prefetched:
    """Install one allow-listed package into the cache and leave the cache read-only."""
    spec = spec_parse(raw)
    check_allowed(spec)
    cache = prefetch_cache_dir()
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    with cache_lock(cache):
        if spec.ecosystem == NPM:
            return npm_install(spec, cache / NPM)
        return pypi_install(spec, cache / PYPI / normalize(PYPI, spec.name))


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One prefetch at a time; the cache is writable only inside this block."""
    lock_path = cache.parent / "sandbox-cache.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tree_writable(cache, writable=True)
        try:
            yield
        finally:
            tree_writable(cache, writable=False)


def tree_writable(root: Path, *, writable: bool) -> None:
    """``chmod -R u+w`` (or ``a-w``), keeping everything readable by every uid."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        readable = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            readable |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        mode = (mode | readable) & ~WRITE_BITS
        path.chmod(mode | stat.S_IWUSR if writable else mode)


def run_installer(argv: list[str]) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise PrefetchFailed(f"{' '.join(argv[:3])} … failed (exit {result.returncode}): {tail}")
    return result.stdout


def npm_install(spec: PackageSpec, prefix: Path) -> Prefetched:
    """``npm install --prefix`` into the shared npm prefix; start with ``node <bin>``."""
    npm = shutil.which("npm")
    if not npm:
        raise PrefetchFailed("npm is not installed")
    prefix.mkdir(mode=0o755, parents=True, exist_ok=True)
    options = ["--prefix", str(prefix), "--no-audit", "--no-fund"]
    # --prefix also moves npm's global config to <prefix>/etc/npmrc: keep the machine's
    # (a proxy's cafile, a registry mirror live there).
    machine_config = run_installer([npm, "config", "get", "globalconfig"]).strip()
    if machine_config and Path(machine_config).is_file():
        options += ["--globalconfig", machine_config]
    run_installer([npm, "install", *options, spec.install])
    package = prefix / "node_modules" / spec.name
    manifest = json.loads((package / "package.json").read_text())
    bins = manifest.get("bin") or manifest.get("main") or "index.js"
    files = sorted(bins.values()) if isinstance(bins, dict) else [bins]
    commands = [f"node {(package / file).resolve()}" for file in files]
    return Prefetched(spec, package, commands)


def pypi_install(spec: PackageSpec, venv: Path) -> Prefetched:
    """A virtualenv of the base interpreter (bound in every sandbox) with the package."""
    base = getattr(sys, "_base_executable", sys.executable)
    uv = shutil.which("uv")
    python = venv / "bin" / "python"
    if not python.exists():
        venv.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        venv_argv = [uv, "venv", "--python", base, str(venv)] if uv else [base, "-m", "venv"]
        run_installer(venv_argv if uv else [*venv_argv, str(venv)])
    offline = ["--offline"] if uv and Path(spec.install).is_file() else []
    if uv:
        run_installer([uv, "pip", "install", "--python", str(python), *offline, spec.install])
    else:
        run_installer([str(python), "-m", "pip", "install", "--no-input", spec.install])
    scripts = console_scripts(python, spec.name)
    commands = [f"{python} {venv / 'bin' / script}" for script in scripts]
    module = normalize(PYPI, spec.name).replace("-", "_")
    return Prefetched(spec, venv, commands or [f"{python} -m {module}"])


def console_scripts(python: Path, name: str) -> list[str]:
    """The console scripts the installed distribution declares."""
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps(sorted(e.name for e in m.distribution(sys.argv[1]).entry_points "
        "if e.group == 'console_scripts')))"
    )
    return list(json.loads(run_installer([str(python), "-c", code, name])))


# --- starting from the cache --------------------------------------------------------

NPX_FLAGS = frozenset({"-y", "--yes", "-q", "--quiet"})
UVX_VERSION = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:(?:==|@)(\S+))?$")


def cached_argv(argv: list[str]) -> list[str] | None:
    """The argv that starts ``npx -y <pkg>[@version] …`` or ``uvx <pkg>[==version] …``
    from the prefetch cache (no network needed), or None when the cache lacks that
    package (or holds another version than the one asked for)."""
    if not argv:
        return None
    program = Path(argv[0]).name
    if program == "npx":
        return _npx_from_cache(argv[1:])
    if program == "uvx":
        return _uvx_from_cache(argv[1:])
    return None


def _npx_from_cache(args: list[str]) -> list[str] | None:
    while args and args[0] in NPX_FLAGS:
        args = args[1:]
    if not args or args[0].startswith("-"):
        return None
    match = NPM_VERSION.match(args[0])
    if match is None:
        return None
    name = match.group(1)
    version = args[0][len(name) + 1 :] or None
    package = prefetch_cache_dir() / NPM / "node_modules" / name
    try:
        manifest = json.loads((package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    if version not in (None, "latest", manifest.get("version")):
        return None
    bins = manifest.get("bin") or manifest.get("main") or "index.js"
    if isinstance(bins, dict):
        short = name.rsplit("/", 1)[-1]
        entry = bins.get(short) or (next(iter(bins.values())) if len(bins) == 1 else None)
    else:
        entry = bins
    if not isinstance(entry, str) or not (package / entry).is_file():
        return None
    return ["node", str((package / entry).resolve()), *args[1:]]


def _uvx_from_cache(args: list[str]) -> list[str] | None:
    if not args or args[0].startswith("-"):
        return None
    match = UVX_VERSION.match(args[0])
    if match is None:
        return None
    name, version = match.group(1), match.group(2)
    venv = prefetch_cache_dir() / PYPI / normalize(PYPI, name)
    python, script = venv / "bin" / "python", venv / "bin" / name
    if not (python.exists() and script.is_file()):
        return None
    if version is not None and version != _installed_version(venv, name):
        return None
    return [str(python), str(script), *args[1:]]


def _installed_version(venv: Path, name: str) -> str | None:
    """The version recorded in the venv's dist-info for ``name`` (no interpreter run)."""
    wanted = normalize(PYPI, name).replace("-", "_")
    for info in venv.glob("lib/python*/site-packages/*.dist-info"):
        dist, _, version = info.name.removesuffix(".dist-info").partition("-")
        if normalize(PYPI, dist).replace("-", "_") == wanted:
            return version
    return None
