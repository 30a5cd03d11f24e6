"""``python -m matrixcloud.lib.probe DATABASE_URL REDIS_URL``: are the services up?

Used by ``./dev test`` before the PostgreSQL pass, so a missing service is one clear
line instead of a wall of test errors. Exit status 0 when both answer. A URL with a
password is named with the password hidden.
"""

from __future__ import annotations

import sys

import psycopg
import redis

from matrixcloud.lib.bus import redact_url


def probe(database_url: str, redis_url: str, timeout: float = 3.0) -> list[str]:
    problems: list[str] = []
    try:
        with psycopg.connect(database_url, connect_timeout=int(timeout)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        problems.append(f"PostgreSQL at {redact_url(database_url)}: {exc}".strip())
    try:
        redis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        ).ping()
    except redis.RedisError as exc:
        problems.append(f"Redis at {redact_url(redis_url)}: {exc}")
    return problems


def main() -> int:
    problems = probe(sys.argv[1], sys.argv[2])
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
