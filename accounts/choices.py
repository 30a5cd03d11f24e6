"""Choices for the accounts app."""

from django.db import models


class Role(models.TextChoices):
    """A member's role in a workspace; Owner and Admin may manage it."""

    OWNER = "Owner", "Owner"
    ADMIN = "Admin", "Admin"
    MEMBER = "Member", "Member"

    @classmethod
    def managers(cls) -> frozenset[str]:
        return frozenset({cls.OWNER, cls.ADMIN})


class AuditStatus(models.TextChoices):
    SUCCESS = "success", "success"
    FAILURE = "failure", "failure"


class UsageKind(models.TextChoices):
    """What a usage event meters; ``quantity`` is a count unless noted.

    ``model.pull`` counts bytes downloaded and ``llm.tokens`` tokens; every other kind
    counts actions.
    """

    MODEL_INSPECT = "model.inspect", "model.inspect"
    SANDBOX_START = "sandbox.start", "sandbox.start"
    TOOL_CALL = "tool.call", "tool.call"
    MODEL_PULL = "model.pull", "model.pull (bytes)"
    MODEL_ATTACH = "model.attach", "model.attach"
    MATRIXSHELL_EXEC = "matrixshell.exec", "matrixshell.exec"
    LLM_TOKENS = "llm.tokens", "llm.tokens"
