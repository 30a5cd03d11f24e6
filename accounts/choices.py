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
