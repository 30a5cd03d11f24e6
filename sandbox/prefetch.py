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

import collections
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from matrixcloud.errors import UnprocessableEntity
from matrixcloud.lib import http
from matrixcloud.lib.processes import signal_group
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
    """The installer failed (the message carries its output's tail), or the registry
    could not be reached (``unreachable``)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


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

# A name or version that becomes part of a cache path: npm's own name rules (lower case,
# URL-safe, one optional scope) and PEP 508 names; versions are exact versions or tags.
NPM_CACHE_NAME = re.compile(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
PYPI_CACHE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
CACHE_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
UNPINNED = (None, "", "latest")
LOCK_POLL = 0.2
REGISTRY_TIMEOUT = 5.0
PYPI_DEFAULT_INDEX = "https://pypi.org/simple/"
OUTPUT_LINES = 400
FETCH_LINE = re.compile(r"http fetch|Downloading|Downloaded|Collecting|Fetched")

Lines = Callable[[str], None]


def cache_key(spec: PackageSpec, version: str | None) -> str:
    """The folder of ``spec`` (at ``version``, None: unpinned) under its ecosystem dir."""
    name = normalize(spec.ecosystem, spec.name)
    pattern = NPM_CACHE_NAME if spec.ecosystem == NPM else PYPI_CACHE_NAME
    if not pattern.match(name):
        raise PrefetchRefused(f"{spec.ecosystem} package name {spec.name!r} is not valid")
    key = name.replace("/", "+")
    if version in UNPINNED:
        return key
    assert version is not None
    if not CACHE_VERSION.match(version):
        raise PrefetchRefused(
            f"{spec.ecosystem} package {spec.name!r}: version {version!r} is not an exact "
            "version or tag; pin one (e.g. name@1.2.3 or name==1.2.3)"
        )
    return f"{key}@{version}" if spec.ecosystem == NPM else f"{key}=={version}"


def spec_version(spec: PackageSpec) -> str | None:
    """The version a registry spec pins (``name@1.2.3``, ``name==1.2.3``), or None."""
    if Path(spec.install).is_absolute():
        return None
    rest = spec.install[len(spec.name) :]
    if spec.ecosystem == NPM:
        return rest[1:] if rest.startswith("@") else None
    if rest.startswith("=="):
        return rest[2:]
    if rest:
        raise PrefetchRefused(
            f"pypi package {spec.name!r}: only an exact version (==) can be cached, not {rest!r}"
        )
    return None


def prefetch(
    raw: str | PackageSpec,
    *,
    on_line: Lines | None = None,
    cancel: threading.Event | None = None,
    reuse: bool = False,
) -> Prefetched:
    """Install one allow-listed package into its own folder of the cache, read-only.

    The package is installed into a staging folder and renamed into place, so a sandbox
    never sees half an install and a failed one leaves nothing. ``on_line`` gets the
    installer's output as it comes; ``cancel`` stops the installer (and the wait for
    another install to finish). With ``reuse``, a package already in place (another
    session installed it meanwhile) is kept, not installed again.
    """
    spec = raw if isinstance(raw, PackageSpec) else spec_parse(raw)
    check_allowed(spec)
    key = cache_key(spec, spec_version(spec))
    cache = prefetch_cache_dir()
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    with cache_lock(cache, cancel=cancel):
        home = cache / spec.ecosystem
        home.mkdir(mode=0o755, exist_ok=True)
        target = home / key
        if reuse and target.is_dir():
            return installed(spec, target)
        home.chmod(0o755)
        staging = home / f".staging-{key}-{secrets.token_hex(4)}"
        try:
            if spec.ecosystem == NPM:
                npm_install(spec, staging, on_line=on_line, cancel=cancel)
            else:
                pypi_install(spec, staging, on_line=on_line, cancel=cancel)
            if cancel is not None and cancel.is_set():  # stopped as the installer ended
                raise PrefetchFailed("install cancelled")
            tree_writable(staging, writable=False)
            if target.exists():  # a reinstall (an upgrade) replaces the folder whole
                retired = home / f".retired-{key}-{secrets.token_hex(4)}"
                target.rename(retired)
                tree_writable(retired, writable=True)
                shutil.rmtree(retired, ignore_errors=True)
            staging.rename(target)
        finally:
            if staging.exists():
                tree_writable(staging, writable=True)
                shutil.rmtree(staging, ignore_errors=True)
            home.chmod(0o555)
    return installed(spec, target)


def installed(spec: PackageSpec, folder: Path) -> Prefetched:
    """What ``folder`` (an installed package) holds and the commands that start it."""
    if spec.ecosystem == NPM:
        package = folder / "node_modules" / spec.name
        commands = [f"node {entry}" for entry in npm_entries(package)]
        return Prefetched(spec, package, commands)
    python = folder / "bin" / "python"
    scripts = console_scripts(python, spec.name)
    commands = [f"{python} {folder / 'bin' / script}" for script in scripts]
    module = normalize(PYPI, spec.name).replace("-", "_")
    return Prefetched(spec, folder, commands or [f"{python} -m {module}"])


def npm_entries(package: Path) -> list[Path]:
    """The files a package's ``bin`` (or ``main``) names, resolved."""
    manifest = json.loads((package / "package.json").read_text())
    bins = manifest.get("bin") or manifest.get("main") or "index.js"
    files = sorted(bins.values()) if isinstance(bins, dict) else [bins]
    return [(package / file).resolve() for file in files]


@contextlib.contextmanager
def cache_lock(cache: Path, *, cancel: threading.Event | None = None) -> Iterator[None]:
    """One install at a time, waited for at most :data:`INSTALL_TIMEOUT` (or until
    ``cancel``); the ecosystem folders are writable only inside this block."""
    lock_path = cache.parent / "sandbox-cache.lock"
    deadline = time.monotonic() + INSTALL_TIMEOUT
    with lock_path.open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if (cancel is not None and cancel.is_set()) or time.monotonic() > deadline:
                    raise PrefetchFailed("gave up waiting for another install to finish") from None
                time.sleep(LOCK_POLL)
        cache.chmod(0o755)
        try:
            yield
        finally:
            cache.chmod(0o555)


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


def run_query(argv: list[str]) -> str:
    """A short installer command whose standard output is the answer."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=REGISTRY_TIMEOUT * 4, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise PrefetchFailed(f"{' '.join(argv[:3])} … failed (exit {result.returncode}): {tail}")
    return result.stdout


def run_installer(
    argv: list[str],
    *,
    on_line: Lines | None = None,
    cancel: threading.Event | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run an installer to its end, at most :data:`INSTALL_TIMEOUT` (or until
    ``cancel``), its output (both streams) line by line to ``on_line``."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        env=env,
    )
    stopped: list[str] = []

    def watch() -> None:
        deadline = time.monotonic() + INSTALL_TIMEOUT
        while proc.poll() is None:
            if cancel is not None and cancel.is_set():
                stopped.append("cancelled")
            elif time.monotonic() > deadline:
                stopped.append(f"timed out after {INSTALL_TIMEOUT} s")
            if stopped:
                signal_group(proc.pid, signal.SIGKILL)
                return
            time.sleep(LOCK_POLL)

    watcher = threading.Thread(target=watch, name="installer-watch", daemon=True)
    watcher.start()
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            tail.append(line)
            if on_line is not None:
                on_line(line.rstrip())
    code = proc.wait()
    watcher.join(timeout=1)
    output = "".join(tail)
    if stopped:
        raise PrefetchFailed(f"{Path(argv[0]).name} install {stopped[0]}")
    if code != 0:
        raise PrefetchFailed(
            f"{Path(argv[0]).name} install failed (exit {code}): {output.strip()[-2000:]}"
        )
    return output


def npm_program() -> str:
    npm = shutil.which("npm")
    if not npm:
        raise PrefetchFailed("npm is not installed on the sandbox host")
    return npm


def npm_options(prefix: Path) -> list[str]:
    """``--prefix`` and the machine's own npm config (``--prefix`` also moves npm's
    global config to ``<prefix>/etc/npmrc``; a proxy's cafile, a mirror live there)."""
    options = ["--prefix", str(prefix), "--no-audit", "--no-fund", "--no-update-notifier"]
    machine_config = run_query([npm_program(), "config", "get", "globalconfig"]).strip()
    if machine_config and Path(machine_config).is_file():
        options += ["--globalconfig", machine_config]
    return options


def npm_install(
    spec: PackageSpec, prefix: Path, *, on_line: Lines | None, cancel: threading.Event | None
) -> None:
    """``npm install`` of the one package into its own prefix. Packages' install scripts
    do not run (``--ignore-scripts``): this runs on the sandbox host, not in a sandbox."""
    prefix.mkdir(mode=0o755, parents=True)
    argv = [npm_program(), "install", *npm_options(prefix), "--ignore-scripts"]
    argv += ["--loglevel", "http", spec.install]
    run_installer(argv, on_line=on_line, cancel=cancel)


def pypi_install(
    spec: PackageSpec, venv: Path, *, on_line: Lines | None, cancel: threading.Event | None
) -> None:
    """A virtualenv of the base interpreter (bound in every sandbox) with the package.
    A venv started as ``<venv>/bin/python`` finds itself wherever it lies, so it is
    built in the staging folder and renamed."""
    base = getattr(sys, "_base_executable", sys.executable)
    uv = uv_program()
    python = venv / "bin" / "python"
    venv.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    # uv trusts its own roots unless told: the machine's (a proxy's CA) count here, as
    # they do for npm and pip; and it never downloads a Python of its own.
    uv_env = {"UV_SYSTEM_CERTS": "1", "UV_NATIVE_TLS": "1", "UV_PYTHON_DOWNLOADS": "never"}
    uv_env = {**uv_env, **os.environ}
    if uv:
        run_installer(
            [uv, "venv", "--quiet", "--python", base, str(venv)], cancel=cancel, env=uv_env
        )
        local = Path(spec.install).is_file()
        index = ["--offline"] if local else ["--default-index", pypi_index()]
        argv = [uv, "pip", "install", "--python", str(python), *index, spec.install]
        run_installer(argv, on_line=on_line, cancel=cancel, env=uv_env)
        return
    run_installer([base, "-m", "venv", str(venv)], cancel=cancel)
    argv = [str(python), "-m", "pip", "install", "--no-input"]
    argv += [] if Path(spec.install).is_file() else ["--index-url", pypi_index()]
    run_installer([*argv, spec.install], on_line=on_line, cancel=cancel)


def uv_program() -> str | None:
    """uv on PATH, or the one ``./dev`` installs into ``.tools/``; None: pip then."""
    found = shutil.which("uv")
    if found:
        return found
    tools = Path(settings.BASE_DIR) / ".tools" / "bin" / "uv"
    return str(tools) if tools.is_file() else None


def pypi_index() -> str:
    """The index both the registry check and the installer use: ``UV_DEFAULT_INDEX``,
    ``UV_INDEX_URL`` or ``PIP_INDEX_URL`` (the first set), else PyPI's."""
    names = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")
    return next((os.environ[name] for name in names if os.environ.get(name)), PYPI_DEFAULT_INDEX)


def console_scripts(python: Path, name: str) -> list[str]:
    """The console scripts the installed distribution declares."""
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps(sorted(e.name for e in m.distribution(sys.argv[1]).entry_points "
        "if e.group == 'console_scripts')))"
    )
    return list(json.loads(run_query([str(python), "-c", code, name])))


# --- Whether the registry answers ----------------------------------------------------------


def registry_url(spec: PackageSpec) -> str:
    """Where the installer will ask for ``spec``: npm's configured registry (its config
    and ``npm_config_registry``), uv's/pip's index (``UV_DEFAULT_INDEX``,
    ``UV_INDEX_URL``, ``PIP_INDEX_URL``) or PyPI's."""
    if spec.ecosystem == NPM:
        registry = run_query([npm_program(), "config", "get", "registry"]).strip()
        return f"{registry.rstrip('/')}/{spec.name.replace('/', '%2f')}"
    return f"{pypi_index().rstrip('/')}/{normalize(PYPI, spec.name)}/"


def registry_check(spec: PackageSpec, *, timeout: float = REGISTRY_TIMEOUT) -> str:
    """Ask the registry for the package once, within ``timeout``; the URL asked. Raises
    :class:`PrefetchFailed` (``unreachable``) when it does not answer or lacks it.

    The address is the operator's registry (never a user's), with a name that passed
    the allow-list; the machine's proxy variables apply, as they do to npm and uv.
    """
    url = registry_url(spec)
    if not url.startswith(("http://", "https://")):
        raise PrefetchFailed(f"registry address {url!r} is not http(s)", unreachable=True)
    try:
        reply = http.fetch("GET", url, timeout=timeout, max_bytes=1)
    except http.Unreachable as exc:
        raise PrefetchFailed(f"cannot reach {url}: {exc.reason}", unreachable=True) from exc
    if reply.status == 404:
        raise PrefetchFailed(f"{url} has no package {spec.name!r} (404)", unreachable=True)
    if reply.status >= 400:
        raise PrefetchFailed(f"{url} answered {reply.status}", unreachable=True)
    return url


# --- starting from the cache --------------------------------------------------------

NPX_FLAGS = frozenset({"-y", "--yes", "-q", "--quiet"})
UVX_VERSION = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:(?:==|@)(\S+))?$")
PACKAGE_RUNNERS = ("npx", "uvx", "pipx")


@dataclass(frozen=True)
class Wanted:
    """The package an ``npx``/``uvx``/``pipx run`` command line runs, and the rest of it."""

    spec: PackageSpec
    version: str | None
    args: list[str]


def wanted_package(argv: list[str]) -> Wanted | None:
    """What ``npx -y <pkg>[@version] …``, ``uvx <pkg>[==version] …`` or ``pipx run
    <pkg>[==version] …`` runs; None for any other command line (or one whose options
    say more than this understands: such a command runs as written)."""
    if not argv:
        return None
    program, args = Path(argv[0]).name, argv[1:]
    if program == "npx":
        while args and args[0] in NPX_FLAGS:
            args = args[1:]
        match = NPM_VERSION.match(args[0]) if args and not args[0].startswith("-") else None
        if match is None:
            return None
        name = match.group(1)
        version = args[0][len(name) + 1 :] or None
        return Wanted(PackageSpec(NPM, name, args[0]), version, args[1:])
    if program == "pipx":
        if not args or args[0] != "run":
            return None
        args = args[1:]
    elif program != "uvx":
        return None
    match = UVX_VERSION.match(args[0]) if args and not args[0].startswith("-") else None
    if match is None:
        return None
    name, version = match.group(1), match.group(2)
    install = f"{name}=={version}" if version else name
    return Wanted(PackageSpec(PYPI, name, install), version, args[1:])


def cached_argv(argv: list[str]) -> list[str] | None:
    """The argv that starts ``npx``/``uvx``/``pipx run`` of a package from the prefetch
    cache (no network needed), or None when the cache lacks that package (or holds
    another version than the one asked for)."""
    wanted = wanted_package(argv)
    if wanted is None:
        return None
    if wanted.spec.ecosystem == NPM:
        return _npx_from_cache(wanted)
    return _uvx_from_cache(wanted)


def _folders(wanted: Wanted) -> list[Path]:
    """Where the wanted package may lie: its pinned folder, its unpinned one (checked
    for the version), and for npm the single prefix of earlier releases."""
    home = prefetch_cache_dir() / wanted.spec.ecosystem
    try:
        folders = [home / cache_key(wanted.spec, wanted.version)]
        if wanted.version not in UNPINNED:
            folders.append(home / cache_key(wanted.spec, None))
    except PrefetchRefused:
        return []
    if wanted.spec.ecosystem == NPM:
        folders.append(home)  # <cache>/npm/node_modules/<name>: one shared prefix
    return folders


def _npx_from_cache(wanted: Wanted) -> list[str] | None:
    name, version = wanted.spec.name, wanted.version
    for folder in _folders(wanted):
        package = folder / "node_modules" / name
        try:
            manifest = json.loads((package / "package.json").read_text())
        except (OSError, ValueError):
            continue
        if version not in (*UNPINNED, manifest.get("version")):
            continue
        bins = manifest.get("bin") or manifest.get("main") or "index.js"
        if isinstance(bins, dict):
            short = name.rsplit("/", 1)[-1]
            entry = bins.get(short) or (next(iter(bins.values())) if len(bins) == 1 else None)
        else:
            entry = bins
        if isinstance(entry, str) and (package / entry).is_file():
            return ["node", str((package / entry).resolve()), *wanted.args]
    return None


def _uvx_from_cache(wanted: Wanted) -> list[str] | None:
    name, version = wanted.spec.name, wanted.version
    for venv in _folders(wanted):
        python, script = venv / "bin" / "python", venv / "bin" / name
        if not (python.exists() and script.is_file()):
            continue
        if version is not None and version != _installed_version(venv, name):
            continue
        return [str(python), str(script), *wanted.args]
    return None


def _installed_version(venv: Path, name: str) -> str | None:
    """The version recorded in the venv's dist-info for ``name`` (no interpreter run)."""
    wanted = normalize(PYPI, name).replace("-", "_")
    for info in venv.glob("lib/python*/site-packages/*.dist-info"):
        dist, _, version = info.name.removesuffix(".dist-info").partition("-")
        if normalize(PYPI, dist).replace("-", "_") == wanted:
            return version
    return None
