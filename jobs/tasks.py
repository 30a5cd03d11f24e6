"""django-q2 tasks of the jobs app: two-line adapters that take a job id."""

from __future__ import annotations


def run_job(job_id: str) -> None:
    """Run one batch job (a no-op if another runner has it or it has ended)."""
    from jobs.runner import JobRunner

    JobRunner(job_id).run()


def janitor() -> None:
    """The periodic sweep (django-q2 schedule)."""
    from jobs.janitor import janitor_sweep

    janitor_sweep()
