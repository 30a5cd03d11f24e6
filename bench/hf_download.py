"""Download throughput: ``model.pull``'s downloader vs a plain ``snapshot_download``.

A fake Hugging Face server (``tests/fake_hub.py``) runs in its own process on
127.0.0.1 and serves a generated model folder from disk (``sendfile``): a config, a
tokenizer config and ``--shards`` safetensors files of ``--size-mb`` in all. Each round
downloads the whole snapshot twice into fresh cache folders, in alternating order:

* ``snapshot_download``: ``huggingface_hub.snapshot_download(repo, cache_dir=…)``
  (8 threads, no checksum of what it wrote);
* ``model.pull``: :class:`models_registry.download.SnapshotDownload` as the job runs it
  (plan, disk check, 4 threads, SHA-256 / git blob SHA-1 of every byte while it streams,
  then the snapshot links), without the job's database writes.

Run from the repository root::

    .venv/bin/python bench/hf_download.py                  # 512 MB in 4 shards, 5 rounds
    .venv/bin/python bench/hf_download.py --size-mb 1024 --rounds 3

It prints the median (and each) throughput of both and the ratio, as Markdown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import write_report  # noqa: E402

REPO_ID = "bench/blob-model-7B"


def generate(folder: Path, size_mb: int, shards: int) -> None:
    """A model folder with ``shards`` random weight files of ``size_mb`` in all."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 4096}')
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 4096}')
    per = size_mb * 1024 * 1024 // shards
    block = os.urandom(1024 * 1024)
    for index in range(shards):
        with (folder / f"model-{index + 1:05d}-of-{shards:05d}.safetensors").open("wb") as out:
            written = 0
            while written < per:
                chunk = block[: min(len(block), per - written)]
                out.write(chunk)
                written += len(chunk)
            out.write(index.to_bytes(8, "little"))  # every shard differs


def serve(folder: Path) -> None:
    """Child process: serve ``folder`` as ``REPO_ID`` and print the URL."""
    sys.path.insert(0, str(REPO))
    from tests.fake_hub import FakeHub, FakeRepo

    hub = FakeHub()
    files: dict[str, bytes | Path] = {p.name: p for p in sorted(folder.iterdir())}
    hub.add(FakeRepo(REPO_ID), files)
    hub.start()
    print(hub.url, flush=True)
    sys.stdin.read()  # until the parent closes it
    hub.stop()


def start_hub(folder: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit("the fake hub did not start")
    return proc, url


def setup_django(data_dir: Path, endpoint: str) -> None:
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub is imported
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")
    os.environ["MATRIX_RUNTIME_DATA_DIR"] = str(data_dir)
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ.pop("HF_TOKEN", None)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def run_snapshot_download(endpoint: str, cache: Path) -> int:
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(REPO_ID, cache_dir=cache, endpoint=endpoint, token=False))
    return sum(p.stat().st_size for p in path.iterdir())


def run_model_pull(endpoint: str, cache: Path) -> int:
    from models_registry.download import SnapshotDownload
    from models_registry.hf import HubClient
    from models_registry.sources import parse_model_id

    client = HubClient(endpoint=endpoint)
    meta = client.metadata(parse_model_id(REPO_ID))
    download = SnapshotDownload(client, meta, stopped=lambda: False, cache_root=cache)
    download.plan()
    download.check_disk()
    download.wait(download.start(), lambda: None)
    return download.finish().total_bytes


def measure(name: str, endpoint: str, scratch: Path) -> tuple[float, int]:
    cache = scratch / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    run = run_snapshot_download if name == "snapshot_download" else run_model_pull
    start = time.perf_counter()
    size = run(endpoint, cache)
    elapsed = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    return elapsed, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here (run_all)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory(prefix="hf-bench-") as tmp:
        scratch = Path(tmp)
        generate(scratch / "model", args.size_mb, args.shards)
        proc, url = start_hub(scratch / "model")
        try:
            setup_django(scratch / "data", url)
            write_report(args.json, "hf_download", report(url, scratch, args))
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)


def report(url: str, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    import logging

    logging.getLogger("httpx2").setLevel(logging.WARNING)
    names = ["snapshot_download", "model.pull"]
    measure("model.pull", url, scratch)  # warm the page cache and the server
    results: dict[str, list[float]] = {name: [] for name in names}
    size = 0
    for index in range(args.rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            elapsed, size = measure(name, url, scratch)
            results[name].append(size / elapsed / 1e6)
    print(f"{size / 1e6:.0f} MB in {args.shards} shards + 2 small files, {args.rounds} rounds\n")
    print("| downloader | median MB/s | runs (MB/s) |")
    print("|---|---|---|")
    for name in names:
        runs = ", ".join(f"{value:.0f}" for value in results[name])
        print(f"| {name} | {statistics.median(results[name]):.0f} | {runs} |")
    ratio = statistics.median(results["model.pull"]) / statistics.median(
        results["snapshot_download"]
    )
    print(f"\nmodel.pull / snapshot_download = {ratio:.2f}")
    return {
        "size_mb": round(size / 1e6),
        "shards": args.shards,
        "rounds": args.rounds,
        "mb_per_s": {name: [round(value, 1) for value in results[name]] for name in names},
        "median_mb_per_s": {name: round(statistics.median(results[name]), 1) for name in names},
        "ratio": round(ratio, 3),
    }


if __name__ == "__main__":
    main()
