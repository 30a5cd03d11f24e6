"""A hostile Hugging Face endpoint (a real server on loopback) against model.pull,
model.attach (pull_from_source) and model.inspect.

The hub's listing is data, not code: names that climb out of the cache (``../``, an
absolute path, the data dir's ``django-secret.key``), a blob id or LFS sha256 or commit
sha that is a path, a 300-character name, NUL and newline names, a file that streams far
more than it lists, and resolves that redirect to loopback, the bus or this server's
API. Every case must fail the job with a clear message naming the bad value, and write
nothing outside the repo's cache dir: the file system around it is listed before and
after, and sentinel files keep their bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.models import Workspace
from jobs.models import Job
from jobs.runner import run_job
from jobs.services import job_enqueue
from models_registry.models import ModelInstallation
from tests import factories
from tests.factories import actor_of, bearer
from tests.hostile_hub import HostileHub, Listed, Victim
from tests.jobs.test_jobs_worker import wait_for  # noqa: F401  (a file-backed SQLite test db)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
REPO = "evil/model"
SECRET = b"the installation's signing key\n"
ABSOLUTE = "/abs-target"  # a placeholder: each test puts its own tmp_path/abs-target there


@pytest.fixture(scope="module")
def hub() -> Iterator[HostileHub]:
    with HostileHub() as running:
        yield running


@pytest.fixture(scope="module")
def victim() -> Iterator[Victim]:
    with Victim() as running:
        yield running


@pytest.fixture
def data(hub: HostileHub, victim: Victim, settings: Any, tmp_path: Path) -> Path:
    """A data dir with a signing key and a model cache in it, and a file beside it."""
    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    data = tmp_path / "data"
    settings.MATRIX_DATA_DIR = data
    settings.MATRIX_HF_CACHE_DIR = data / "models" / "huggingface"
    settings.MATRIX_HF_CACHE_DIR.mkdir(parents=True)
    (data / "django-secret.key").write_bytes(SECRET)
    (tmp_path / "x").write_bytes(b"beside the data dir\n")
    hub.crafted.clear()
    hub.requests.clear()
    hub.sent_bytes = 0
    victim.hits.clear()
    return data


@pytest.fixture
def owner() -> tuple[Workspace, str]:
    _user, workspace, token = factories.signup("Hal Hostile", "hal@hostile.test", "Hostile")
    return workspace, token


def listing(top: Path) -> dict[str, str]:
    """Every entry under ``top``: a link's target, a file's sha256, or "dir"."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(top))
            if path.is_symlink():
                found[key] = "link -> " + os.readlink(path)
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def outside_cache(tmp_path: Path, data: Path) -> dict[str, str]:
    cache = data / "models" / "huggingface" / "models--evil--model"
    skip = str(cache.relative_to(tmp_path))
    return {k: v for k, v in listing(tmp_path).items() if not k.startswith(skip)}


def assert_links_stay_inside(data: Path) -> None:
    cache = (data / "models" / "huggingface").resolve()
    for path in cache.rglob("*"):
        if path.is_symlink():
            assert cache in path.resolve().parents, f"{path} -> {os.readlink(path)}"


def placed(case: str, tmp_path: Path) -> tuple[list[Listed], str | None, str]:
    """The case with its absolute path made the test's own (outside the data dir)."""
    entries, sha, says = CASES[case]
    target = str(tmp_path / "abs-target")
    fixed = [
        Listed(
            e.path.replace(ABSOLUTE, target),
            e.content,
            e.oid,
            e.lfs_sha256.replace(ABSOLUTE, target) if e.lfs_sha256 else e.lfs_sha256,
            e.size,
        )
        for e in entries
    ]
    return fixed, sha, says.replace(ABSOLUTE, target)


def run(workspace: Workspace, job_type: str, **payload: Any) -> Job:
    job = job_enqueue(job_type=job_type, payload=payload, ttl_seconds=0, actor=actor_of(workspace))
    run_job(job.pk)
    return Job.objects.get(pk=job.pk)


# Each case: (listing, commit sha or None, what the error must say).
LONG = "a" * 300
CASES: dict[str, tuple[list[Listed], str | None, str]] = {
    "climbing name": (
        [Listed("../../../../../x")],
        None,
        "unsafe file name for \"evil/model\": '../../../../../x' (it must be a normalised",
    ),
    "absolute name": (
        [Listed(f"{ABSOLUTE}")],
        None,
        f"unsafe file name for \"evil/model\": '{ABSOLUTE}' (an absolute path)",
    ),
    "the signing key": (
        [Listed("config.json", b"{}"), Listed("../../../../../django-secret.key", b"pwned")],
        None,
        "'../../../../../django-secret.key' (it must be a normalised relative path)",
    ),
    "blob id that is a path": (
        [Listed("config.json", oid="../" * 10 + "etc")],
        None,
        "unsafe blob id for \"evil/model\": '../../../../../../../../../../etc' (not 40 hex",
    ),
    "absolute sha256": (
        [Listed("weights.bin", lfs_sha256=ABSOLUTE)],
        None,
        f"unsafe sha256 for \"evil/model\": '{ABSOLUTE}' (not 64 hex digits)",
    ),
    "commit that is a path": (
        [Listed("config.json")],
        "../../../../x",
        "unsafe commit for \"evil/model\": '../../../../x' (not 40 hex digits)",
    ),
    "300-character name": (
        [Listed(LONG)],
        None,
        "(a part is over 200 bytes); nothing was written",
    ),
    "NUL in a name": (
        [Listed("config\x00.json")],
        None,
        "'config\\x00.json' (it holds a control character)",
    ),
    "newline in a name": (
        [Listed("config\n.json")],
        None,
        "'config\\n.json' (it holds a control character)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_listing_fails_the_pull_and_writes_nothing_outside_the_cache(
    case: str, hub: HostileHub, data: Path, owner: Any, tmp_path: Path
) -> None:
    entries, sha, says = placed(case, tmp_path)
    hub.serve_listing(REPO, entries, **({"sha": sha} if sha else {}))
    before = outside_cache(tmp_path, data)
    job = run(owner[0], "model.pull", model=f"hf:{REPO}")
    assert job.status == "error"
    assert says in job.error
    if ABSOLUTE not in CASES[case][2]:
        assert str(tmp_path) not in job.error  # no host path in the message
    assert "internal error" not in job.error
    assert "Traceback" not in job.error
    assert outside_cache(tmp_path, data) == before
    assert (data / "django-secret.key").read_bytes() == SECRET
    assert not (tmp_path / "abs-target").exists()
    assert not list(tmp_path.glob("abs-target*"))
    assert_links_stay_inside(data)
    # nothing of the repo was fetched: the listing was refused before any download
    assert not [p for _m, p, _h in hub.requests if "/resolve/" in p]


@pytest.mark.parametrize("case", ["climbing name", "the signing key", "blob id that is a path"])
def test_a_hostile_listing_fails_the_attach_and_its_installation(
    case: str, api: Any, hub: HostileHub, data: Path, owner: Any, tmp_path: Path
) -> None:
    _, token = owner
    entries, sha, says = placed(case, tmp_path)
    hub.serve_listing(REPO, entries, **({"sha": sha} if sha else {}))
    before = outside_cache(tmp_path, data)
    profile = api.post(
        "/v1/model-profiles", {"provider": "Hugging Face", "external_id": REPO}, **bearer(token)
    ).json()["profile"]
    response = api.post(
        f"/v1/model-profiles/{profile['id']}/attach", {"runtimeId": "local"}, **bearer(token)
    )
    assert response.status_code == 202, response.content
    body = response.json()
    run_job(body["job_id"])
    job = Job.objects.get(pk=body["job_id"])
    assert job.status == "error"
    assert says in job.error
    installation = ModelInstallation.objects.get(pk=body["installation_id"])
    assert installation.status == "failed"
    assert says in installation.error
    assert outside_cache(tmp_path, data) == before
    assert (data / "django-secret.key").read_bytes() == SECRET


def test_a_file_that_streams_more_than_it_lists_is_cut_at_its_size(
    hub: HostileHub, data: Path, owner: Any, tmp_path: Path
) -> None:
    crafted = hub.serve_listing(REPO, [Listed("weights.bin", b"0123456789abcdef", lfs_sha256="")])
    crafted.oversize["weights.bin"] = 24 << 20  # 24 MiB for a file listed at 16 bytes
    before = outside_cache(tmp_path, data)
    job = run(owner[0], "model.pull", model=f"hf:{REPO}")
    assert job.status == "error"
    assert "the hub sent more than the 16 bytes it listed for 'weights.bin'" in job.error
    cache = data / "models" / "huggingface" / "models--evil--model"
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert written <= 16  # the bad copy is gone: nothing to resume from
    assert not list(cache.rglob("*.incomplete"))
    assert outside_cache(tmp_path, data) == before


@pytest.mark.parametrize("where", ["victim", "bus", "api"])
def test_a_resolve_that_redirects_elsewhere_is_not_followed(
    where: str, hub: HostileHub, victim: Victim, data: Path, owner: Any, settings: Any
) -> None:
    location = {
        "victim": f"{victim.url}/steal",
        "bus": "http://127.0.0.1:6379/",
        "api": f"http://127.0.0.1:{settings.MATRIX_PORT}/v1/workspaces",
    }[where]
    crafted = hub.serve_listing(REPO, [Listed("config.json", b"{}")])
    crafted.redirect["config.json"] = location
    job = run(owner[0], "model.pull", model=f"hf:{REPO}")
    assert job.status == "error"
    origin = location.split("/", 3)
    assert f"hugging face sent the download to {origin[0]}//{origin[2]}" in job.error
    assert "not followed" in job.error
    assert victim.hits == []


def test_inspect_does_not_follow_a_redirect_to_loopback(
    hub: HostileHub, victim: Victim, data: Path, owner: Any
) -> None:
    crafted = hub.serve_listing(
        REPO, [Listed("config.json", b"{}"), Listed("model.safetensors", b"x" * 64, lfs_sha256="")]
    )
    crafted.redirect["model.safetensors"] = f"{victim.url}/steal"
    job = run(owner[0], "model.inspect", model=f"hf:{REPO}")
    assert victim.hits == []
    assert job.status == "error"
    assert "not followed" in job.error


def test_the_endpoints_own_redirects_still_work(hub: HostileHub, data: Path, owner: Any) -> None:
    """A redirect within the endpoint's own origin is the Hub's normal way: followed."""
    content = b'{"model_type": "llama"}'
    crafted = hub.serve_listing(
        REPO, [Listed("config.json", content), Listed("real.json", content)]
    )
    crafted.redirect["config.json"] = f"{hub.url}/{REPO}/resolve/main/real.json"
    job = run(owner[0], "model.pull", model=f"hf:{REPO}")
    assert job.status == "complete", job.error
    assert job.result["files"] == 2


def test_an_empty_file_pulls(hub: HostileHub, data: Path, owner: Any) -> None:
    """A repo's empty file (``__init__.py``, ``.gitkeep``) is a file like any other."""
    hub.serve_listing(REPO, [Listed("config.json", b"{}"), Listed("pkg/__init__.py", b"")])
    job = run(owner[0], "model.pull", model=f"hf:{REPO}")
    assert job.status == "complete", job.error
    assert (Path(job.result["local_path"]) / "pkg" / "__init__.py").read_bytes() == b""


def test_a_name_that_is_both_a_file_and_a_folder_is_refused_up_front(
    hub: HostileHub, data: Path, owner: Any
) -> None:
    hub.serve_listing(REPO, [Listed("a", b"1"), Listed("a/b", b"2")])
    job = run(owner[0], "model.pull", model=f"hf:{REPO}")
    assert job.status == "error"
    assert "unsafe file name for \"evil/model\": 'a' (both a file and a folder)" in job.error
    assert not [p for _m, p, _h in hub.requests if "/resolve/" in p]


def test_a_malformed_listing_is_a_clear_error(hub: HostileHub, data: Path, owner: Any) -> None:
    crafted = hub.serve_listing(REPO, [Listed("config.json")])
    crafted.drop_oid = True  # a tree entry without its "oid"
    job = run(owner[0], "model.pull", model=f"hf:{REPO}")
    assert job.status == "error"
    assert job.error.startswith("decode hf response: ")
    assert "internal error" not in job.error
