"""The variable that carries a session's allowlist to its proxy (importable without
starting Django, unlike :mod:`sandbox.egress.guard`)."""

ALLOW_VARIABLE = "MATRIX_EGRESS_SESSION_ALLOW"
