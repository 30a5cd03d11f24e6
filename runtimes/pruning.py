"""What ``manage.py prune`` deletes of the runtimes app: join tokens that expired (or
were revoked) more than the token grace ago."""

from __future__ import annotations

from django.db.models import Q

from matrixcloud.lib.pruning import Retention, delete_in_batches
from runtimes.models import JoinToken


def runtimes_prune(retention: Retention) -> dict[str, int]:
    cutoff = retention.token_cutoff
    ended = JoinToken.objects.filter(Q(expires_at__lt=cutoff) | Q(revoked_at__lt=cutoff))
    return {"join_tokens": delete_in_batches(ended, dry_run=retention.dry_run)}
