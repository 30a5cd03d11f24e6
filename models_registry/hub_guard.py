"""What a Hugging Face endpoint says is data, never a path or a place to go.

The endpoint may be a mirror, a misconfigured ``HF_ENDPOINT`` or a man in the middle,
so everything it answers is checked here before it is used:

- **Names.** A file name of a listing becomes a path under the repo's snapshot dir, a
  blob id or LFS sha256 the name of a blob, a commit sha the name of a snapshot dir.
  :func:`file_name` accepts only a relative, normalised path (no ``..``, ``.``, empty
  or absolute parts, no backslash, NUL, newline or other control character; at most
  :data:`MAX_PATH_CHARS` characters, each part at most :data:`MAX_PART_BYTES` bytes);
  :func:`blob_id`, :func:`sha256` and :func:`commit` accept exactly 40, 64 and 40
  lowercase hex digits. A refusal is :class:`UnsafeHubName`, naming the bad value
  (escaped and shortened), never a host path. The download then checks the final path
  of everything it writes against the repo's cache dir (``matrixcloud.lib.paths``).
- **Places.** Every request the Hub client sends, each redirect hop included, goes by
  :func:`request_hook`: to the endpoint's own origin, or to one of the Hub's own hosts
  (:data:`HUB_HOSTS`) or a host in ``MATRIX_RUNTIME_EGRESS_ALLOW``, and then only to an
  address the egress guard (``matrixcloud.lib.egress``) allows; anything else (a
  redirect to loopback, to the bus, to this server's API) is refused before it is sent.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any

import httpx2
from django.conf import settings

from matrixcloud import errors
from matrixcloud.lib import egress

MAX_PATH_CHARS = 1024
MAX_PART_BYTES = 200  # a snapshot link's part; file systems allow 255
SHOWN_CHARS = 80
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
# The Hub's own hosts, where huggingface.co sends downloads (LFS and Xet CDNs).
HUB_HOSTS = ("huggingface.co", "hf.co")


class UnsafeHubName(errors.UpstreamError):
    """The endpoint answered a name that may not become a path."""


def shown(value: str) -> str:
    """``value`` escaped (NUL, newlines, any control character) and shortened."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 5]}...{text[-2:]}"


def _refuse(repo: str, what: str, value: str, rule: str) -> UnsafeHubName:
    return UnsafeHubName(
        f'hugging face answered an unsafe {what} for "{repo}": {shown(value)} ({rule}); '
        "nothing was written"
    )


def file_name(repo: str, value: Any) -> str:
    """``value`` when it is a safe relative path inside the repo; else UnsafeHubName."""
    if not isinstance(value, str) or not value:
        raise _refuse(repo, "file name", str(value), "empty")
    if len(value) > MAX_PATH_CHARS:
        raise _refuse(repo, "file name", value, f"longer than {MAX_PATH_CHARS} characters")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in value):
        raise _refuse(repo, "file name", value, "it holds a control character")
    if "\\" in value:
        raise _refuse(repo, "file name", value, "it holds a backslash")
    if value.startswith("/"):
        raise _refuse(repo, "file name", value, "an absolute path")
    for part in value.split("/"):
        if part in ("", ".", ".."):
            raise _refuse(repo, "file name", value, "it must be a normalised relative path")
        if len(part.encode()) > MAX_PART_BYTES:
            raise _refuse(repo, "file name", value, f"a part is over {MAX_PART_BYTES} bytes")
    return value


def blob_id(repo: str, value: Any) -> str:
    if not isinstance(value, str) or not HEX40.match(value):
        raise _refuse(repo, "blob id", str(value), "not 40 hex digits")
    return value


def sha256(repo: str, value: Any) -> str:
    if not isinstance(value, str) or not HEX64.match(value):
        raise _refuse(repo, "sha256", str(value), "not 64 hex digits")
    return value


def commit(repo: str, value: Any) -> str:
    if not isinstance(value, str) or not HEX40.match(value):
        raise _refuse(repo, "commit", str(value), "not 40 hex digits")
    return value


def size(repo: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _refuse(repo, f"size of {shown(name)}", str(value), "not a whole number of bytes")
    return value


def distinct_paths(repo: str, files: list[Any]) -> list[Any]:
    """``files`` (each with a ``path``) when no name repeats and none is both a file and a
    folder of others; else UnsafeHubName naming it."""
    names = {f.path for f in files}
    if len(names) != len(files):
        counted = Counter(f.path for f in files)
        twice = next(name for name, count in counted.items() if count > 1)
        raise _refuse(repo, "file name", twice, "listed twice")
    for name in names:
        parts = name.split("/")
        for cut in range(1, len(parts)):
            folder = "/".join(parts[:cut])
            if folder in names:
                raise _refuse(repo, "file name", folder, "both a file and a folder")
    return files


# --- where the Hub client may go -------------------------------------------------------------
def _hub_host(host: str) -> bool:
    bare = host.rstrip(".").lower()
    return any(bare == own or bare.endswith(f".{own}") for own in HUB_HOSTS)


def url_check(url: str) -> None:
    """Refuse (EgressError) a request of the Hub client to anywhere but the endpoint's
    origin, the Hub's own hosts and allowlisted hosts, or to an address the egress guard
    refuses."""
    endpoint = str(settings.HF_ENDPOINT).rstrip("/")
    if egress.same_origin(url, [endpoint]):
        return  # the operator's endpoint (a mirror, a test hub): theirs to choose
    host = httpx2.URL(url).host
    policy = egress.Policy.current()
    if not (_hub_host(host) or host.rstrip(".").lower() in policy.allow_hosts):
        raise egress.EgressError(
            f"hugging face sent the download to {egress.origin(url)}, which is neither "
            f"{endpoint} nor a Hugging Face host: not followed (allow a mirror's host with "
            f"{egress.ALLOW_VARIABLE})",
            refused=True,
        )
    egress.target(url, policy=policy)


def request_hook(request: httpx2.Request) -> None:
    """An httpx2 request hook: runs before every request, each redirect hop included."""
    url_check(str(request.url))


def client_factory() -> httpx2.Client:
    """The Hub client's HTTP client: huggingface_hub's defaults, with the guard first."""
    from huggingface_hub.utils._http import hf_request_event_hook

    return httpx2.Client(
        event_hooks={"request": [request_hook, hf_request_event_hook]},
        follow_redirects=True,
        timeout=None,
    )


def install() -> None:
    """Make every huggingface_hub request in this process go by :func:`request_hook`."""
    from huggingface_hub.utils import close_session, set_client_factory

    set_client_factory(client_factory)
    close_session()  # a client made before this point is not reused
