"""A disk quota for a directory a sandbox writes: its own small file system.

Where the host is root, a sandbox's scratch dir (its cwd and HOME, the only host dir it
can write; ``/tmp`` is a size-bounded tmpfs charged to its memory cgroup) is the mount
point of a sparse ext4 image of the quota's size, loop-mounted ``nosuid,nodev``.
Writing past it fails inside the sandbox with ENOSPC, and the host's free space drops
by at most the quota (the image only grows as blocks are written). Making one costs
about 10 ms (``mkfs.ext4`` without a journal, ``mount -o loop``).

Images live in ``<data>/sandbox-disks/<host pid>.<name>.img``; :func:`leftovers_remove`
unmounts and deletes those of dead hosts. Tier ``none`` (not root, or no ``mkfs.ext4``
or loop devices): no quota, and ``/v1/ready`` warns. A later user (MatrixShell's
workspace dir) mounts a persistent image the same way.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from matrixcloud.lib.processes import earlier_process_gone
from sandbox.bubblewrap import SANDBOX_UID

logger = logging.getLogger(__name__)

TIER_LOOP = "loop-ext4"
TIER_NONE = "none"
COMMAND_TIMEOUT = 30.0
MB = 1024 * 1024


@dataclass(frozen=True)
class QuotaSupport:
    tier: str
    reason: str


def disks_dir() -> Path:
    return Path(settings.MATRIX_DATA_DIR).resolve() / "sandbox-disks"


def _program(name: str) -> str | None:
    return shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


@functools.cache
def quota_support() -> QuotaSupport:
    """Whether this host can give sandboxes a quota (probed once)."""
    if settings.MATRIX_SANDBOX_DISK_MB == 0:
        return QuotaSupport(TIER_NONE, "MATRIX_RUNTIME_SANDBOX_DISK_MB=0 turns the quota off")
    if os.geteuid() != 0:
        return QuotaSupport(TIER_NONE, "the sandbox host is not root, so it cannot mount")
    missing = [name for name in ("mkfs.ext4", "mount", "umount") if not _program(name)]
    if missing:
        return QuotaSupport(TIER_NONE, f"{', '.join(missing)} not found (e2fsprogs, mount)")
    if not Path("/dev/loop-control").exists():
        return QuotaSupport(TIER_NONE, "no loop devices (/dev/loop-control)")
    return QuotaSupport(TIER_LOOP, "each sandbox's scratch dir is an ext4 image of the quota")


def _run(*argv: str) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise OSError(f"{Path(argv[0]).name} failed: {result.stderr.strip()[-300:]}")


def _image(mount_point: Path) -> Path:
    return disks_dir() / f"{os.getpid()}.{mount_point.name}.img"


def quota_mount(mount_point: Path, *, size_mb: int | None = None, owner: int = SANDBOX_UID) -> bool:
    """Mount a fresh file system of ``size_mb`` (default the setting) on the existing
    dir ``mount_point``, owned by ``owner`` (0700). False where the tier is ``none``."""
    if quota_support().tier != TIER_LOOP:
        return False
    size = (size_mb or settings.MATRIX_SANDBOX_DISK_MB) * MB
    disks_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
    image = _image(mount_point)
    try:
        with open(image, "wb") as handle:
            handle.truncate(size)
        _run(
            _program("mkfs.ext4") or "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
            "-E", f"root_owner={owner}:{owner},nodiscard", str(image),
        )  # fmt: skip
        _run(_program("mount") or "mount", "-o", "loop,nosuid,nodev", str(image), str(mount_point))
    except (OSError, subprocess.SubprocessError):
        image.unlink(missing_ok=True)
        raise
    mount_point.chmod(0o700)
    with contextlib.suppress(OSError):
        (mount_point / "lost+found").rmdir()
    return True


def quota_unmount(mount_point: Path) -> None:
    """Unmount (lazily if busy) and delete the image; nothing where none was mounted."""
    image = _image(mount_point)
    if not image.exists():
        return
    _unmount(mount_point)
    image.unlink(missing_ok=True)


def _unmount(mount_point: Path) -> None:
    if not os.path.ismount(mount_point):
        return
    umount = _program("umount") or "umount"
    try:
        _run(umount, str(mount_point))
    except (OSError, subprocess.SubprocessError):
        _run(umount, "-l", str(mount_point))  # a process still inside: detach now


def leftovers_remove(mount_root: Path) -> int:
    """Unmount and delete the images of dead hosts (their mount points are
    ``mount_root/<name>``); the number removed."""
    if quota_support().tier != TIER_LOOP or not disks_dir().is_dir():
        return 0
    removed = 0
    for image in disks_dir().glob("*.img"):
        host_pid, _, rest = image.name.partition(".")
        if not host_pid.isdigit() or not earlier_process_gone(int(host_pid)):
            continue
        try:
            _unmount(mount_root / rest.removesuffix(".img"))
            image.unlink(missing_ok=True)
            removed += 1
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("could not remove sandbox disk %s: %s", image, exc)
    return removed
