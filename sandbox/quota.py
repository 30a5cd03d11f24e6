"""A disk quota for a directory a sandbox writes: its own small file system.

Where the host is root, a sandbox's scratch dir (its cwd and HOME, the only host dir it
can write; ``/tmp`` is a size-bounded tmpfs charged to its memory cgroup) is the mount
point of a sparse ext4 image of the quota's size, loop-mounted ``nosuid,nodev``.
Writing past it fails inside the sandbox with ENOSPC, and the host's free space drops
by at most the quota (the image only grows as blocks are written). Making one costs
about 10 ms (``mkfs.ext4`` without a journal, ``mount -o loop``).

Images live in ``<data>/sandbox-disks/<host pid>.<name>.img``; :func:`leftovers_remove`
unmounts and deletes those of dead hosts. Tier ``none`` (not root, or no ``mkfs.ext4``
or loop devices): no quota, and ``/v1/ready`` warns.

A persistent dir (each workspace's MatrixShell dir) is the mount point of an image that
outlives every process, ``<data>/sandbox-disks/<kind>/<name>.img``, with a journal:
:func:`persistent_mount` makes it on first use (seeded with what the dir already held),
grows it when the setting grew, and mounts it where it is not mounted yet. It is
idempotent and safe across threads and processes (a lock file next to the image): a
mount a previous process left is reused when it is of this image and replaced when it
is not (its image deleted or swapped), so a restart needs no clean-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from matrixcloud.lib.processes import earlier_process_gone
from sandbox.bubblewrap import SANDBOX_UID

logger = logging.getLogger(__name__)

TIER_LOOP = "loop-ext4"
TIER_NONE = "none"
COMMAND_TIMEOUT = 30.0
SEED_TIMEOUT = 300.0  # mkfs -d copying what a persistent dir already held
LOCK_TIMEOUT = SEED_TIMEOUT + 2 * COMMAND_TIMEOUT
LOCK_POLL = 0.05
MB = 1024 * 1024
MKFS_OPTIONS = ("-q", "-F", "-m", "0", "-E")


@dataclass(frozen=True)
class QuotaSupport:
    tier: str
    reason: str


def disks_dir() -> Path:
    return Path(settings.MATRIX_DATA_DIR).resolve() / "sandbox-disks"


def _program(name: str) -> str | None:
    return shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


@functools.cache
def host_support() -> QuotaSupport:
    """Whether this process can mount quota file systems at all (probed once)."""
    if os.geteuid() != 0:
        return QuotaSupport(TIER_NONE, "this process is not root, so it cannot mount")
    missing = [name for name in ("mkfs.ext4", "mount", "umount") if not _program(name)]
    if missing:
        return QuotaSupport(TIER_NONE, f"{', '.join(missing)} not found (e2fsprogs, mount)")
    if not Path("/dev/loop-control").exists():
        return QuotaSupport(TIER_NONE, "no loop devices (/dev/loop-control)")
    return QuotaSupport(TIER_LOOP, "a loop-mounted ext4 image of the quota")


@functools.cache
def quota_support() -> QuotaSupport:
    """Whether this host can give sandboxes a quota (probed once)."""
    if settings.MATRIX_SANDBOX_DISK_MB == 0:
        return QuotaSupport(TIER_NONE, "MATRIX_RUNTIME_SANDBOX_DISK_MB=0 turns the quota off")
    host = host_support()
    if host.tier != TIER_LOOP:
        return host
    return QuotaSupport(TIER_LOOP, "each sandbox's scratch dir is an ext4 image of the quota")


def persistent_support(size_mb: int, setting: str, what: str) -> QuotaSupport:
    """Whether a persistent dir (``what``) gets its quota of ``size_mb`` (from ``setting``)."""
    if size_mb == 0:
        return QuotaSupport(TIER_NONE, f"{setting}=0 turns the quota off")
    host = host_support()
    if host.tier != TIER_LOOP:
        return host
    return QuotaSupport(TIER_LOOP, f"{what} is a persistent ext4 image of {size_mb} MiB")


def _run(*argv: str, timeout: float = COMMAND_TIMEOUT, ok: tuple[int, ...] = (0,)) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode not in ok:
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
            _program("mkfs.ext4") or "mkfs.ext4", *MKFS_OPTIONS,
            f"root_owner={owner}:{owner},nodiscard", "-O", "^has_journal", str(image),
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


# --- persistent dirs ------------------------------------------------------------------


@dataclass(frozen=True)
class DiskUsage:
    """A mounted quota file system's use: bytes taken (its metadata included) of the limit."""

    used_bytes: int
    limit_bytes: int

    @property
    def free_bytes(self) -> int:
        return self.limit_bytes - self.used_bytes


def persistent_image(kind: str, name: str) -> Path:
    """Where the persistent image of ``kind``'s dir ``name`` lives."""
    return disks_dir() / kind / f"{name}.img"


def persistent_mount(
    mount_point: Path, image: Path, *, size_mb: int, owner: int, create: bool = True
) -> bool:
    """Mount ``image`` on the dir ``mount_point`` (owned by ``owner``, 0700) unless it is
    mounted there already; made first where it does not exist, of ``size_mb``, holding
    what the dir held. False where the host cannot mount (tier ``none``), and where there
    is no image yet, ``create`` is false and the dir holds nothing (nothing to bound)."""
    if host_support().tier != TIER_LOOP:
        return False
    if not create and not image.exists() and not _has_entries(mount_point):
        return False
    image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mount_point.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(image.with_suffix(".lock")):
        backing = mounted_backing(mount_point)
        if backing == str(image):
            return True
        if backing == "":
            raise OSError(f"{mount_point} is already a mount point, not of its quota image")
        if backing is not None:  # a leftover: its image deleted or replaced since
            logger.warning("replacing the stale mount of %s on %s", backing, mount_point)
            _unmount(mount_point)
        if image.exists():
            _image_grow(image, size_mb * MB)
        else:
            _image_make(image, size_mb * MB, owner=owner, seed=mount_point)
        _run(_program("mount") or "mount", "-o", "loop,nosuid,nodev", str(image), str(mount_point))
    mount_point.chmod(0o700)
    os.chown(mount_point, owner, owner)
    with contextlib.suppress(OSError):
        (mount_point / "lost+found").rmdir()
    return True


def persistent_unmount(mount_point: Path) -> None:
    """Unmount a persistent dir (lazily if busy), keeping its image for the next mount."""
    _unmount(mount_point)


def persistent_usage(mount_point: Path, image: Path) -> DiskUsage | None:
    """The use of ``image`` mounted on ``mount_point``; None where it is not mounted there."""
    if mounted_backing(mount_point) != str(image):
        return None
    stats = os.statvfs(mount_point)
    limit = image.stat().st_size
    return DiskUsage(used_bytes=max(limit - stats.f_bavail * stats.f_frsize, 0), limit_bytes=limit)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (threads and processes), waited for at most
    :data:`LOCK_TIMEOUT` seconds."""
    deadline = time.monotonic() + LOCK_TIMEOUT
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(f"{path.name} stayed locked for {LOCK_TIMEOUT:g} s") from None
                time.sleep(LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _has_entries(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except FileNotFoundError:
        return False


def _image_make(image: Path, size: int, *, owner: int, seed: Path) -> None:
    """A fresh image (with a journal: it holds data for good); what ``seed`` holds (a dir
    from before the quota) is copied in, then removed from under the mount point."""
    fresh = image.with_name(f"{image.name}.new")
    seeded = _has_entries(seed)
    argv = [
        _program("mkfs.ext4") or "mkfs.ext4",
        *MKFS_OPTIONS,
        f"root_owner={owner}:{owner},nodiscard",
    ]
    if seeded:
        argv += ["-d", str(seed)]
    try:
        with open(fresh, "wb") as handle:
            handle.truncate(size)
        _run(*argv, str(fresh), timeout=SEED_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        fresh.unlink(missing_ok=True)
        if seeded:
            raise OSError(f"what {seed} holds does not fit in {size // MB} MiB ({exc})") from exc
        raise
    fresh.rename(image)
    for entry in seed.iterdir() if seeded else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _image_grow(image: Path, size: int) -> None:
    """Grow an unmounted image to ``size`` (the setting grew); a smaller setting keeps it."""
    e2fsck, resize2fs = _program("e2fsck"), _program("resize2fs")
    if image.stat().st_size >= size or not e2fsck or not resize2fs:
        return
    _run(e2fsck, "-f", "-p", str(image), timeout=SEED_TIMEOUT, ok=(0, 1))  # 1: fixed
    with open(image, "r+b") as handle:
        handle.truncate(size)
    _run(resize2fs, str(image), timeout=SEED_TIMEOUT)


def mounted_backing(mount_point: Path) -> str | None:
    """What is mounted on ``mount_point`` last: the backing file of its loop device (with
    `` (deleted)`` once removed), "" for anything else, None where nothing is."""
    source = _mount_source(str(mount_point))
    if source is None:
        return None
    if not source.startswith("/dev/loop"):
        return ""
    try:
        return Path("/sys/block", Path(source).name, "loop", "backing_file").read_text().strip()
    except OSError:
        return ""


def _mount_source(target: str) -> str | None:
    source = None
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 6 and _unescape(fields[4]) == target and "-" in fields[6:]:
                source = _unescape(fields[fields.index("-", 6) + 2])
    return source


def _unescape(text: str) -> str:
    """mountinfo's octal escapes (a space is ``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)
