"""Enqueue → running: how long a created job waits before a real worker starts it.

For each configuration (database; the bus is Redis, or the embedded valkey) this script makes a
fresh installation (data dir, database, bus), migrates it, starts a real
``manage.py worker`` and then, in a child process configured like the web process,
creates ``--jobs`` trivial jobs (``test.echo``) one at a time through the HTTP API
(Django's test client: the whole middleware, auth and view stack, no socket). For each
job it records

* ``created_at → started_at`` from the job row (both written on this machine's clock),
* the wall clock from sending the POST to seeing the row ``running`` (polled every 2 ms),

then a burst: ``--jobs`` POSTs back to back, the wait of each and the jobs per second
from the first POST to the last finish (16 runner threads; one process POSTing, so the
POST rate bounds it too). It also measures the idle worker's CPU use (its own
processes, not the database server's) over ``--idle-seconds``: what its claim loop's
idle poll costs.

Run from the repository root (PostgreSQL and Redis as in ``./dev test``)::

    .venv/bin/python bench/enqueue_latency.py                 # every configuration
    .venv/bin/python bench/enqueue_latency.py --only sqlite-redis --jobs 50 --idle-seconds 30

Results are printed as a Markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REDIS_URL, REPO, embedded_bus, postgres_database, write_report

ENV_DROPPED = ("DATABASE_URL", "MATRIXCLOUD_DATABASE_URL", "MATRIX_RUNTIME_DB_URL", "REDIS_URL")


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    database: str  # sqlite | postgres

    @property
    def name(self) -> str:
        return f"{self.database}-redis"  # the bus: Redis, or the embedded valkey


CONFIGS = [Config(database) for database in ("sqlite", "postgres")]


# --- the driver: fresh installation, worker, child ---------------------------------------


@contextmanager
def installation(config: Config, data_dir: Path) -> Iterator[dict[str, str]]:
    """The environment of a fresh installation for ``config``."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    env.update(
        MATRIX_RUNTIME_DATA_DIR=str(data_dir),
        MATRIX_RUNTIME_MODE="local-dev",
        MATRIX_RUNTIME_EXTRA_JOB_MODULES="tests.job_handlers",
        # 16 runner threads: a burst never waits for a free slot, and the worker's
        # connections (2 per slot + 4, docs/DEPLOY.md) fit PostgreSQL's default 100.
        MATRIX_RUNTIME_MAX_CONCURRENT_JOBS="16",
        MATRIX_RUNTIME_BUS_PREFIX=f"bench{os.getpid()}",
        MATRIX_RUNTIME_RATE_LIMIT_RPM="1000000",
    )
    if config.database == "sqlite":
        with embedded_bus() as bus_url:
            yield {**env, "REDIS_URL": bus_url}
    else:
        with postgres_database(f"bench_enqueue_{os.getpid()}") as url:
            yield {**env, "REDIS_URL": REDIS_URL, "DATABASE_URL": url}


@contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "running." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def group_cpu_seconds(session: int) -> float:
    """User + system CPU seconds of every process in ``session`` (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat (session id), 0-based after comm
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(proc: subprocess.Popen[bytes], seconds: float = 5.0) -> float:
    before = group_cpu_seconds(proc.pid)
    time.sleep(seconds)
    return 100 * (group_cpu_seconds(proc.pid) - before) / seconds


def measure(config: Config, jobs: int, idle_seconds: float = 5.0) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{config.name}-"))
    try:
        with installation(config, data_dir) as env:
            manage = [sys.executable, "manage.py"]
            subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True)
            with worker(env, data_dir / "worker.log") as proc:
                time.sleep(2)  # let the worker settle (its first sweep)
                idle = idle_cpu_percent(proc, idle_seconds)
                child = subprocess.run(
                    [sys.executable, __file__, "--child", "--jobs", str(jobs)],
                    cwd=REPO,
                    env=env,
                    check=False,
                    capture_output=True,
                    text=True,
                )
                if child.returncode:
                    worker_log = (data_dir / "worker.log").read_text(errors="replace")
                    raise RuntimeError(
                        f"the child failed ({child.returncode}):\n{child.stderr[-4000:]}\n"
                        f"--- worker log (end) ---\n{worker_log[-4000:]}"
                    )
        result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
        result.update(config=config.name, idle_cpu_percent=round(idle, 1))
        return result
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# --- the child: creates jobs as the web process does ----------------------------------------
def child(jobs: int) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")
    import django

    django.setup()
    import tests.job_handlers  # noqa: F401  (the trivial type)

    sequential = [one_job(i) for i in range(jobs)]
    burst, per_second = burst_jobs(jobs)
    print(
        json.dumps(
            {
                "jobs": jobs,
                "row_ms": summary([s["row_ms"] for s in sequential]),
                "wall_ms": summary([s["wall_ms"] for s in sequential]),
                "post_ms": summary([s["post_ms"] for s in sequential]),
                "burst_row_ms": summary(burst),
                "burst_jobs_per_second": per_second,
            }
        )
    )


def post_job(client: Any, message: str) -> str:
    response = client.post(
        "/v1/jobs",
        {"type": "test.echo", "payload": {"message": message}},
        content_type="application/json",
        REMOTE_ADDR="127.0.0.1",
    )
    assert response.status_code == 202, response.content
    return str(response.json()["job_id"])


def one_job(index: int) -> dict[str, float]:
    from django.test import Client

    from jobs.models import Job

    client = Client()
    sent = time.perf_counter()
    job_id = post_job(client, f"job {index}")
    posted = time.perf_counter()
    while not Job.objects.filter(pk=job_id, started_at__isnull=False).exists():
        if time.perf_counter() - sent > 30:
            raise RuntimeError(f"{job_id} did not start within 30 s")
        time.sleep(0.002)
    seen = time.perf_counter()
    job = wait_terminal(job_id)
    return {
        "row_ms": (job.started_at - job.created_at).total_seconds() * 1000,
        "wall_ms": (seen - sent) * 1000,
        "post_ms": (posted - sent) * 1000,
    }


def wait_terminal(job_id: str) -> Any:
    from jobs.models import Job

    deadline = time.monotonic() + 30
    while True:
        job = Job.objects.get(pk=job_id)
        if job.is_terminal:
            assert job.status == "complete", (job.status, job.error)
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"{job_id} did not finish within 30 s")
        time.sleep(0.005)


def burst_jobs(jobs: int) -> tuple[list[float], float]:
    """Wait of each job of a burst, and the jobs per second from first POST to last end."""
    from django.test import Client

    client = Client()
    ids = [post_job(client, f"burst {i}") for i in range(jobs)]
    ended = [wait_terminal(job_id) for job_id in ids]
    span = max(j.finished_at for j in ended) - min(j.created_at for j in ended)
    waits = [(job.started_at - job.created_at).total_seconds() * 1000 for job in ended]
    return waits, round(jobs / span.total_seconds(), 1)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


# --- report -------------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| configuration | created→started median / p95 (ms) | POST→seen running median / p95 "
        "(ms) | POST alone median (ms) | burst: wait median / p95 (ms), jobs/s | "
        "idle worker CPU (%) |\n|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r['config']} | {r['row_ms']['median']} / {r['row_ms']['p95']} | "
        f"{r['wall_ms']['median']} / {r['wall_ms']['p95']} | {r['post_ms']['median']} | "
        f"{r['burst_row_ms']['median']} / {r['burst_row_ms']['p95']}, "
        f"{r['burst_jobs_per_second']} | {r['idle_cpu_percent']} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--only", action="append", help="configuration name(s) to run")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="the idle CPU window")
    parser.add_argument("--json", type=Path, help="also write the results here (run_all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.jobs)
        return
    configs = [c for c in CONFIGS if not args.only or c.name in args.only]
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {os.getloadavg()}", flush=True)
    results = []
    for config in configs:
        results.append(measure(config, args.jobs, args.idle_seconds))
        print(json.dumps(results[-1]), flush=True)
    print(f"# load average after: {os.getloadavg()}")
    print(table(results))
    write_report(args.json, "enqueue_latency", results)


if __name__ == "__main__":
    main()
