"""What ``manage.py prune`` deletes of the accounts app: session tokens that are expired,
idle-expired or revoked, and password-reset and email-verification links that expired
or were used, all past the token grace. The audit log (append-only, hash-chained) is
never touched."""

from __future__ import annotations

from django.db.models import Q

from accounts.models import EmailVerification, PasswordReset, SessionToken
from matrixcloud.lib.pruning import Retention, delete_in_batches


def accounts_prune(retention: Retention) -> dict[str, int]:
    cutoff, dry_run = retention.token_cutoff, retention.dry_run
    counts = {
        "session_tokens": delete_in_batches(
            SessionToken.objects.filter(
                Q(expires_at__lt=cutoff) | Q(idle_expires_at__lt=cutoff) | Q(revoked_at__lt=cutoff)
            ),
            dry_run=dry_run,
        )
    }
    for name, model in (
        ("password_resets", PasswordReset),
        ("email_verifications", EmailVerification),
    ):
        counts[name] = delete_in_batches(
            model.objects.filter(Q(expires_at__lt=cutoff) | Q(used_at__lt=cutoff)), dry_run=dry_run
        )
    return counts
