"""Writes for accounts: sign-up, sessions, password reset, verification, invitations.

Each function makes one complete change (rows, audit record, post-commit email) in one
transaction. They raise `matrixcloud.errors` and know nothing of HTTP.
"""

from accounts.principals import LOCAL_WORKSPACE_SLUG, local_workspace
from accounts.services.identity import IssuedSession, normalise_email, workspace_slug_base
from accounts.services.invitations import invitation_accept, invitation_create
from accounts.services.passwords import (
    RESET_TTL,
    VERIFY_TTL,
    email_verification_resend,
    email_verify,
    password_reset_complete,
    password_reset_request,
)
from accounts.services.sessions import (
    session_issue,
    session_revoke,
    session_revoke_all,
    user_login,
    user_signup,
)

__all__ = [
    "LOCAL_WORKSPACE_SLUG",
    "RESET_TTL",
    "VERIFY_TTL",
    "IssuedSession",
    "email_verification_resend",
    "email_verify",
    "invitation_accept",
    "invitation_create",
    "local_workspace",
    "normalise_email",
    "password_reset_complete",
    "password_reset_request",
    "session_issue",
    "session_revoke",
    "session_revoke_all",
    "user_login",
    "user_signup",
    "workspace_slug_base",
]
