"""What this host enforces on sandboxes, in one place: one line per concern.

``serve`` prints these lines when it starts, ``/v1/ready`` turns the weak ones into
warnings, and the console shows the weak ones as a banner (Overview and each sandbox
page), so the three never disagree. Each line says what is in force and, where that is
weaker than the production default (bubblewrap, a cgroup per sandbox, a disk quota,
sandboxes offline unless a session is given network), how to reach it: the command to
run on this machine or the setting to change.

The summary is computed by the process that asks, from the same probes the sandbox
host uses (:func:`sandbox.isolation.tier_probe`, :func:`sandbox.cgroups.cgroup_support`,
:mod:`sandbox.quota`), all cached per process; on one machine (``serve``) that is the
host's own view.

To add a line, write a function that returns an :class:`EnforcementLine` (or ``None``
where the concern does not apply here) and list it in :data:`LINE_SOURCES`; its order
there is the order ``serve`` prints and the banner shows. A weak line with a
``warning`` code becomes a ``/v1/ready`` warning of that code.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sandbox import cgroups, isolation, quota
from sandbox.egress import CEILING_VARIABLE
from sandbox.matrixshell.workspace import shell_quota_support

OK = "ok"
WEAK = "weak"
OS_RELEASE = Path("/etc/os-release")
# Distribution ids (``ID``, then ``ID_LIKE``) and the command that installs a package.
INSTALLERS = (
    (("debian", "ubuntu"), "apt-get install -y {package}"),
    (("fedora", "rhel", "centos"), "dnf install -y {package}"),
    (("alpine",), "apk add {package}"),
    (("arch",), "pacman -S --noconfirm {package}"),
    (("suse", "opensuse"), "zypper install -y {package}"),
)
# Kernel settings that keep unprivileged user namespaces (so bubblewrap) from working:
# (the sysctl, the value that blocks them, a value that allows them).
USERNS_SYSCTLS = (
    ("kernel.apparmor_restrict_unprivileged_userns", "1", "0"),  # Ubuntu 24.04
    ("kernel.unprivileged_userns_clone", "0", "1"),  # Debian before 11
    ("user.max_user_namespaces", "0", "15000"),
)
PROC_SYS = Path("/proc/sys")
LOOP_CONTROL = Path("/dev/loop-control")
NETWORK_SETTING = "MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK"


@dataclass(frozen=True)
class Fix:
    """How to reach the production default: what to do, and the exact command to run
    on this machine where there is one."""

    advice: str
    command: str = ""

    def __str__(self) -> str:
        return f"{self.advice}: {self.command}" if self.command else self.advice


@dataclass(frozen=True)
class EnforcementLine:
    """One concern: what is in force (``tier``, ``text``), whether that is the production
    default (``level`` ok) or weaker (weak), how to fix it, and the ``/v1/ready``
    warning code a weak line raises."""

    key: str
    label: str
    level: str
    tier: str
    text: str
    fix: Fix | None = None
    warning: str = ""

    @property
    def weak(self) -> bool:
        return self.level == WEAK

    def sentence(self) -> str:
        """The line as ``serve`` prints it (weak lines start with ``warning:``)."""
        line = f"{self.label}: {self.tier} - {self.text}"
        if self.fix:
            line += f"; to fix, {self.fix}"
        return f"warning: {line}" if self.weak else line


@dataclass(frozen=True)
class Enforcement:
    """Every line in force on this host, in :data:`LINE_SOURCES` order."""

    lines: tuple[EnforcementLine, ...]

    @property
    def weak(self) -> tuple[EnforcementLine, ...]:
        return tuple(line for line in self.lines if line.weak)

    @property
    def at_default(self) -> bool:
        """Whether everything is at the production default (no banner then)."""
        return not self.weak

    def warnings(self) -> list[dict[str, str]]:
        """The weak lines as ``/v1/ready`` warnings: ``{code, message, fix?}``."""
        return [
            {
                "code": line.warning,
                "message": line.text,
                **({"fix": str(line.fix)} if line.fix else {}),
            }
            for line in self.weak
            if line.warning
        ]


def enforcement_summary() -> Enforcement:
    """What this host enforces now (the probes behind it are cached per process)."""
    lines = (source() for source in LINE_SOURCES)
    return Enforcement(tuple(line for line in lines if line is not None))


# --- Fixes --------------------------------------------------------------------------


def as_root(command: str, *, euid: int | None = None) -> str:
    """``command``, with ``sudo`` in front where this process (or ``euid``) is not root."""
    return command if (os.geteuid() if euid is None else euid) == 0 else f"sudo {command}"


def os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    """The fields of an os-release file (empty when it cannot be read)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() and not name.startswith("#"):
            parts = shlex.split(value, comments=False) if value.strip() else [""]
            fields[name.strip()] = parts[0] if parts else ""
    return fields


def install_command(package: str, *, release: Path = OS_RELEASE, euid: int | None = None) -> str:
    """The command that installs ``package`` on this distribution (from os-release);
    empty where the distribution is not known."""
    fields = os_release(release)
    ids = [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]
    for distro in ids:
        for family, command in INSTALLERS:
            if distro in family:
                return as_root(command.format(package=package), euid=euid)
    return ""


def install_fix(package: str, *, release: Path = OS_RELEASE) -> Fix:
    command = install_command(package, release=release)
    if command:
        return Fix(f"install {package}", command)
    return Fix(f"install the {package} package with this system's package manager")


def userns_fix(proc_sys: Path = PROC_SYS) -> Fix:
    """The sysctl that allows user namespaces where one forbids them; else the advice."""
    for name, blocking, allowing in USERNS_SYSCTLS:
        try:
            value = (proc_sys / name.replace(".", "/")).read_text().strip()
        except OSError:
            continue
        if value == blocking:
            return Fix("allow user namespaces", as_root(f"sysctl -w {name}={allowing}"))
    return Fix(
        "allow user namespaces for this service (in a container, a seccomp profile that "
        "permits them)"
    )


def isolation_fix() -> Fix:
    """How to get bubblewrap working here: install it, or allow its namespaces."""
    if isolation.bwrap_path() is None:
        return install_fix("bubblewrap")
    return userns_fix()


# --- The lines ----------------------------------------------------------------------


def isolated() -> bool:
    return isolation.tier_probe().tier == isolation.TIER_BUBBLEWRAP


def isolation_line() -> EnforcementLine:
    probe = isolation.tier_probe()
    if probe.tier == isolation.TIER_BUBBLEWRAP:
        return EnforcementLine("isolation", "isolation", OK, "bubblewrap", probe.reason)
    missing = isolation.bwrap_path() is None
    reason = "bwrap is not installed" if missing else probe.reason
    return EnforcementLine(
        "isolation",
        "isolation",
        WEAK,
        "unisolated",
        f"sandboxes run without isolation: {reason}",
        fix=isolation_fix(),
        warning="isolation_unavailable",
    )


def limits_line() -> EnforcementLine:
    support = cgroups.cgroup_support() if isolated() else None
    if support is not None and support.tier != cgroups.TIER_RLIMITS:
        return EnforcementLine("limits", "limits", OK, support.tier, _cgroup_text())
    reason = support.reason if support else "sandboxes are not under bubblewrap"
    return EnforcementLine(
        "limits",
        "limits",
        WEAK,
        cgroups.TIER_RLIMITS,
        f"sandboxes have per-process rlimits only, no aggregate limit: {reason} ({_rlimit_text()})",
        fix=_limits_fix(),
        warning="sandbox_limits_per_process",
    )


def _cgroup_text() -> str:
    limits = cgroups.CgroupLimits.from_settings()
    cpus = f"{limits.cpus:g} CPU" if limits.cpus else "no CPU quota"
    return (
        f"each sandbox's cgroup caps memory at {limits.memory_bytes // isolation.MB} MiB "
        f"(its /tmp included), {limits.max_processes} processes and {cpus}; "
        f"each process also has rlimits"
    )


def _rlimit_text() -> str:
    limits = isolation.SandboxLimits.from_settings()
    return (
        f"each process: {limits.memory_bytes // isolation.MB} MiB address space, "
        f"{limits.max_processes} processes, {limits.open_files} open files, "
        f"{limits.cpu_seconds} s CPU"
    )


def _limits_fix() -> Fix:
    if not isolated():
        fix = isolation_fix()
        return Fix(f"isolate sandboxes first, {fix.advice}", fix.command)
    if os.geteuid() != 0:
        return Fix("run the sandbox host as root (each sandbox still runs as an unprivileged uid)")
    return Fix(
        "delegate the memory, pids and cpu cgroup controllers to this service "
        "(systemd: Delegate=yes)"
    )


def disk_quota_line() -> EnforcementLine:
    support = quota.quota_support()
    if support.tier != quota.TIER_NONE:
        text = f"{support.reason} ({settings.MATRIX_SANDBOX_DISK_MB} MiB)"
        return EnforcementLine("disk_quota", "disk quota", OK, support.tier, text)
    return EnforcementLine(
        "disk_quota",
        "disk quota",
        WEAK,
        quota.TIER_NONE,
        f"sandboxes have no disk quota: {support.reason}",
        fix=_quota_fix("MATRIX_RUNTIME_SANDBOX_DISK_MB", settings.MATRIX_SANDBOX_DISK_MB),
        warning="sandbox_disk_quota_off",
    )


def matrixshell_quota_line() -> EnforcementLine | None:
    """The disk quota of workspaces' MatrixShell dirs; only where MatrixShell is on."""
    if not settings.MATRIX_MATRIXSHELL_ENABLED:
        return None
    support = shell_quota_support()
    label = "MatrixShell disk quota"
    if support.tier != quota.TIER_NONE:
        return EnforcementLine("matrixshell_quota", label, OK, support.tier, support.reason)
    return EnforcementLine(
        "matrixshell_quota",
        label,
        WEAK,
        quota.TIER_NONE,
        f"MatrixShell's workspace dirs have no disk quota: {support.reason}",
        fix=_quota_fix("MATRIX_RUNTIME_MATRIXSHELL_DISK_MB", settings.MATRIX_MATRIXSHELL_DISK_MB),
        warning="matrixshell_disk_quota_off",
    )


def _quota_fix(setting: str, size_mb: int) -> Fix:
    """Why a quota is off decides the fix: the setting, root, loop devices, the programs."""
    if size_mb == 0:
        return Fix(f"set {setting} to a size in MiB")
    if os.geteuid() != 0:
        return Fix("run this service as root (it mounts each quota's file system)")
    if not LOOP_CONTROL.exists():
        return Fix("give this host loop devices (in a container, /dev/loop-control and /dev/loop*)")
    return install_fix("e2fsprogs")  # mkfs.ext4


def network_line() -> EnforcementLine:
    """Sandboxes' network: ``host`` (unisolated), ``offline`` (bubblewrap's empty network
    namespace), or offline unless a session asks for full network (the installation
    permits ``allow_network``). Egress allowlisted per session through a proxy is a
    line of its own (:func:`egress_line`)."""
    if not isolated():
        fix = isolation_fix()
        return EnforcementLine(
            "network",
            "network",
            WEAK,
            "host",
            "sandboxes share this host's network (they are not isolated)",
            fix=Fix(f"isolate sandboxes, {fix.advice}", fix.command),
            warning="sandbox_network_host",
        )
    if settings.MATRIX_SANDBOX_ALLOW_NETWORK:
        return EnforcementLine(
            "network",
            "network",
            WEAK,
            "offline, open on request",
            f"sandboxes are offline unless a session asks for allow_network, which "
            f"{NETWORK_SETTING} permits: such a session reaches any address",
            fix=Fix(f"unset {NETWORK_SETTING} (every sandbox stays offline)"),
            warning="sandbox_network_allowed",
        )
    return EnforcementLine(
        "network",
        "network",
        OK,
        "offline",
        f"each sandbox has an empty network namespace; allow_network is refused "
        f"({NETWORK_SETTING} is off)",
    )


def egress_line() -> EnforcementLine:
    """Sandboxes' egress by allowlist (sandbox/egress): a session with an allowlist (its
    catalog entry's, or ``network_allow`` within the ceiling) reaches only those hosts,
    through a proxy of its own that is its one route out; that holds only where the
    sandbox has a network namespace of its own."""
    ceiling = ", ".join(settings.MATRIX_EGRESS_CEILING) or "empty: requests may name nothing"
    if not isolated():
        return EnforcementLine(
            "egress",
            "egress",
            WEAK,
            "not enforced",
            "a session's allowlist cannot be enforced without a network namespace",
            fix=Fix(f"isolate sandboxes, {isolation_fix().advice}", isolation_fix().command),
            warning="sandbox_egress_unenforced",
        )
    return EnforcementLine(
        "egress",
        "egress",
        OK,
        "allowlist per session",
        "a session with an allowlist reaches only its listed hosts, through its own "
        "proxy (never loopback, metadata or this installation's services); "
        f"{CEILING_VARIABLE}: {ceiling}",
    )


LineSource = Callable[[], EnforcementLine | None]
LINE_SOURCES: tuple[LineSource, ...] = (
    isolation_line,
    limits_line,
    disk_quota_line,
    matrixshell_quota_line,
    network_line,
    egress_line,
)
