"""MatrixCloud settings: one env-driven module.

Every variable is documented in README.md ("Configuration"). The original Go server's
variable names keep working (docs/COMPATIBILITY.md#c-06). A bad value raises
ImproperlyConfigured at start.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from matrixcloud.lib.bus import pool_options
from matrixcloud.lib.egress.rules import allow_entries
from matrixcloud.lib.env import (
    database_config,
    env_bool,
    env_choice,
    env_first,
    env_float,
    env_int,
    env_list,
    env_path,
    env_secret,
    env_str,
)
from matrixcloud.lib.keyfile import read_or_create_key

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = "0.2.0"
IMPLEMENTATION = "matrixcloud-django"

# --- Mode -------------------------------------------------------------------------
MODES = ("local-dev", "customer-agent", "cloud-worker", "hf-space")
MATRIX_MODE = env_choice("MATRIX_RUNTIME_MODE", MODES, default="local-dev")
MATRIX_PRODUCTION = MATRIX_MODE != "local-dev"
_MODE_DEFAULTS: dict[str, object] = {
    "local-dev": {"concurrency": 2, "runtime_id": "rt_local"},
    "hf-space": {"concurrency": 1, "runtime_id": "rt_hf_space"},
    "customer-agent": {"concurrency": 5, "runtime_id": "rt_customer_agent"},
    "cloud-worker": {"concurrency": 5, "runtime_id": "rt_cloud_worker"},
}[MATRIX_MODE]

# --- Identity, paths, limits --------------------------------------------------------
MATRIX_RUNTIME_ID = env_str("MATRIX_RUNTIME_ID", str(_MODE_DEFAULTS["runtime_id"]))
_default_data = (
    Path.home() / ".matrix" / "runtime" / "data"
    if MATRIX_MODE == "local-dev"
    else Path("/var/lib/matrix-runtime")
)
MATRIX_DATA_DIR = env_path("MATRIX_RUNTIME_DATA_DIR", _default_data)
MATRIX_HOST = env_str("MATRIX_RUNTIME_HOST", "127.0.0.1")
_port_var, _port_value = env_first("MATRIX_RUNTIME_PORT", "PORT")
MATRIX_PORT = env_int(_port_var, 8080, minimum=1, maximum=65535) if _port_var else 8080
MATRIX_MAX_TTL_SECONDS = env_int("MATRIX_RUNTIME_MAX_TTL_SECONDS", 600, minimum=1)
# Model downloads (model.pull, model.attach) count the time without progress, not wall
# time: a job that wrote no byte for this long expires, and none outlives the hard cap.
MATRIX_MODEL_STALL_SECONDS = env_int(
    "MATRIX_RUNTIME_MODEL_STALL_SECONDS",
    min(120, MATRIX_MAX_TTL_SECONDS),
    minimum=1,
    maximum=MATRIX_MAX_TTL_SECONDS,
)
MATRIX_MODEL_MAX_SECONDS = env_int("MATRIX_RUNTIME_MODEL_MAX_SECONDS", 6 * 3600, minimum=60)
# A resumable job (model.pull, model.attach, model.preload) whose runner died is queued
# again, up to this many attempts in all; any other job ends ``error``.
MATRIX_JOB_MAX_ATTEMPTS = env_int("MATRIX_RUNTIME_JOB_MAX_ATTEMPTS", 3, minimum=1, maximum=10)
MATRIX_MAX_CONCURRENT_JOBS = env_int(
    "MATRIX_RUNTIME_MAX_CONCURRENT_JOBS", int(str(_MODE_DEFAULTS["concurrency"])), minimum=1
)
MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE = env_int(
    "MATRIX_RUNTIME_MAX_CONCURRENT_JOBS_PER_WORKSPACE", MATRIX_MAX_CONCURRENT_JOBS, minimum=1
)
MATRIX_EXTRA_JOB_MODULES = env_list("MATRIX_RUNTIME_EXTRA_JOB_MODULES")
MATRIX_API_TOKEN = env_secret("MATRIX_RUNTIME_API_TOKEN")
MATRIX_RATE_LIMIT_RPM = env_int("MATRIX_RUNTIME_RATE_LIMIT_RPM", 120)
# Tool calls (and matrixshell exec) per proven credential per minute: a budget of their own.
MATRIX_TOOL_CALL_RATE_LIMIT_RPM = env_int("MATRIX_RUNTIME_TOOL_CALL_RATE_LIMIT_RPM", 1200)
MATRIX_CLOUD_URL = env_str("MATRIX_CLOUD_URL", "https://cloud.matrixhub.io")
_public_var, _public_url = env_first("MATRIX_RUNTIME_PUBLIC_URL", "MATRIXCLOUD_APP_URL")
MATRIX_PUBLIC_URL = (_public_url or f"http://127.0.0.1:{MATRIX_PORT}").rstrip("/")
MATRIX_JOB_RETENTION_HOURS = env_int("MATRIX_RUNTIME_JOB_RETENTION_HOURS", 24)
MATRIX_LOG_RETENTION_HOURS = env_int("MATRIX_RUNTIME_LOG_RETENTION_HOURS", 72)
MATRIX_CLEANUP_INTERVAL_MINUTES = env_int("MATRIX_RUNTIME_CLEANUP_INTERVAL_MINUTES", 15)
_shell_var, _ = env_first("MATRIX_RUNTIME_MATRIXSHELL_ENABLED", "MATRIX_SHELL_ENABLED")
# MatrixShell runs arbitrary commands: off unless explicitly enabled, in every mode.
MATRIX_MATRIXSHELL_ENABLED = env_bool(_shell_var, False) if _shell_var else False
# What matrixshell.install pip-installs: an index spec, or a local wheel or package dir.
MATRIX_MATRIXSHELL_SPEC = env_str("MATRIX_RUNTIME_MATRIXSHELL_SPEC", "matrixsh") or "matrixsh"
MATRIX_MATRIXSHELL_TIMEOUT = env_float("MATRIX_RUNTIME_MATRIXSHELL_TIMEOUT", 60.0, minimum=0.1)
MATRIX_MATRIXSHELL_OUTPUT_BYTES = env_int(
    "MATRIX_RUNTIME_MATRIXSHELL_OUTPUT_BYTES", 1024 * 1024, minimum=1024
)
# Each workspace's MatrixShell dir is a persistent file system of this size (sandbox/quota.py);
# 0 turns the quota off.
MATRIX_MATRIXSHELL_DISK_MB = env_int("MATRIX_RUNTIME_MATRIXSHELL_DISK_MB", 1024, minimum=0)
MATRIX_MAX_BODY_BYTES = env_int("MATRIX_RUNTIME_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
MATRIX_HEARTBEAT_SECONDS = env_float("MATRIX_RUNTIME_HEARTBEAT_SECONDS", 5.0, minimum=0.5)
# A registered remote runtime silent this long is listed as offline.
MATRIX_RUNTIME_OFFLINE_AFTER_SECONDS = env_float(
    "MATRIX_RUNTIME_OFFLINE_AFTER_SECONDS", 90.0, minimum=1.0
)
# How often this installation heart-beats to the control plane it joined (manage.py join).
MATRIX_RUNTIME_CLOUD_HEARTBEAT_SECONDS = env_float(
    "MATRIX_RUNTIME_CLOUD_HEARTBEAT_SECONDS", 30.0, minimum=0.2
)
MATRIX_SSE_KEEPALIVE_SECONDS = env_float("MATRIX_RUNTIME_SSE_KEEPALIVE_SECONDS", 15.0, minimum=0.1)
# The web process serves plain (non-streaming) requests from this many threads, which
# keep their database connections this many seconds (matrixcloud/lib/lanes.py).
MATRIX_WEB_THREADS = env_int("MATRIX_RUNTIME_WEB_THREADS", 32, minimum=1)
MATRIX_WEB_CONN_MAX_AGE = env_float("MATRIX_RUNTIME_WEB_CONN_MAX_AGE", 300.0, minimum=0)
MATRIX_EXTRA_ALLOWED_HOSTS = env_list("MATRIX_RUNTIME_ALLOWED_HOSTS")
MATRIX_TRUSTED_PROXIES = env_list("MATRIX_RUNTIME_TRUSTED_PROXIES")
MATRIX_ALLOWED_ORIGINS = env_list("MATRIX_RUNTIME_ALLOWED_ORIGINS")
MATRIX_CATALOG_FILE = env_path(
    "MATRIX_RUNTIME_CATALOG_FILE", BASE_DIR / "models_registry" / "data" / "catalog.json"
)
HF_TOKEN = env_secret("HF_TOKEN")
HF_ENDPOINT = env_str("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
MATRIX_HF_CACHE_DIR = env_path(
    "MATRIX_RUNTIME_HF_CACHE_DIR", MATRIX_DATA_DIR / "models" / "huggingface"
)

# --- Sandboxes (sandbox/policy.py, sandbox/isolation.py) ----------------------------
# Comma lists that replace the command policy's defaults; empty keeps the original's
# (docs/COMPATIBILITY.md#c-06).
MATRIX_ALLOWED_PROGRAMS = env_list("MATRIX_RUNTIME_ALLOWED_PROGRAMS")
MATRIX_BLOCKED_TOKENS = env_list("MATRIX_RUNTIME_BLOCKED_TOKENS")
# Production modes refuse sandboxes without bubblewrap unless this says otherwise.
MATRIX_ALLOW_UNISOLATED = env_bool("MATRIX_RUNTIME_ALLOW_UNISOLATED", False)
MATRIX_SANDBOX_MEMORY_MB = env_int("MATRIX_RUNTIME_SANDBOX_MEMORY_MB", 2048, minimum=64)
MATRIX_SANDBOX_MAX_PROCESSES = env_int("MATRIX_RUNTIME_SANDBOX_MAX_PROCESSES", 256, minimum=4)
MATRIX_SANDBOX_OPEN_FILES = env_int("MATRIX_RUNTIME_SANDBOX_OPEN_FILES", 1024, minimum=16)
MATRIX_SANDBOX_FILE_SIZE_MB = env_int("MATRIX_RUNTIME_SANDBOX_FILE_SIZE_MB", 1024, minimum=1)
MATRIX_SANDBOX_CPU_SECONDS = env_int("MATRIX_RUNTIME_SANDBOX_CPU_SECONDS", 3600, minimum=1)
# Aggregate limits of one sandbox (cgroups where the host can make them; sandbox/cgroups.py)
# and its disk quota (a loop-mounted scratch file system; sandbox/quota.py).
MATRIX_SANDBOX_CPUS = env_float("MATRIX_RUNTIME_SANDBOX_CPUS", 1.0, minimum=0)
MATRIX_SANDBOX_DISK_MB = env_int("MATRIX_RUNTIME_SANDBOX_DISK_MB", 1024, minimum=0)
MATRIX_SANDBOX_MAX_PER_WORKSPACE = env_int(
    "MATRIX_RUNTIME_SANDBOX_MAX_PER_WORKSPACE", 50, minimum=0
)
# Packages `manage.py sandbox_prefetch` may install; empty: the catalog's MCP servers.
MATRIX_PREFETCH_ALLOWED = env_list("MATRIX_RUNTIME_PREFETCH_ALLOWED")
# Sessions (sandbox/host): the start (spawn to tools listed), a tool call without
# progress, a tool call in all, and how many live sessions one host holds.
MATRIX_SANDBOX_START_TIMEOUT = env_float("MATRIX_RUNTIME_SANDBOX_START_TIMEOUT", 45.0, minimum=1)
MATRIX_SANDBOX_CALL_TIMEOUT = env_float("MATRIX_RUNTIME_SANDBOX_CALL_TIMEOUT", 20.0, minimum=0.1)
MATRIX_SANDBOX_CALL_HARD_CAP = env_float("MATRIX_RUNTIME_SANDBOX_CALL_HARD_CAP", 120.0, minimum=0.1)
if MATRIX_SANDBOX_CALL_HARD_CAP < MATRIX_SANDBOX_CALL_TIMEOUT:
    raise ImproperlyConfigured(
        "MATRIX_RUNTIME_SANDBOX_CALL_HARD_CAP must not be below MATRIX_RUNTIME_SANDBOX_CALL_TIMEOUT"
    )
MATRIX_SANDBOX_HOST_CAPACITY = env_int("MATRIX_RUNTIME_SANDBOX_HOST_CAPACITY", 500, minimum=1)
# Whether a session may ask for network (allow_network); off: every sandbox is offline.
MATRIX_SANDBOX_ALLOW_NETWORK = env_bool("MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK", False)
# Extra host paths every sandbox sees read-only at the same place (tests: the fixtures).
MATRIX_SANDBOX_RO_BINDS = [Path(p).absolute() for p in env_list("MATRIX_RUNTIME_SANDBOX_RO_BINDS")]

# --- Egress: the server's own outbound requests (matrixcloud/lib/egress) -----------
# Hosts or CIDRs a fetch of a user-supplied URL may reach in a production mode although
# they are loopback or private (a model server on the LAN). Metadata, link-local and
# this installation's own API, bus and database stay refused even when listed.
MATRIX_EGRESS_ALLOW = allow_entries(env_list("MATRIX_RUNTIME_EGRESS_ALLOW"))
# What a sandbox session's `network_allow` may name (sandbox/egress): hosts, *.domains,
# addresses, CIDRs, each with an optional :port; `*` any host. Empty: nothing.
MATRIX_EGRESS_CEILING = env_list("MATRIX_RUNTIME_EGRESS_CEILING")

# --- Secrets -----------------------------------------------------------------------
# Encryption keys for provider credentials: comma-separated, the first encrypts.
_encryption_keys = env_secret("MATRIXCLOUD_SECRET_KEY")
_django_key = env_secret("DJANGO_SECRET_KEY")
try:
    MATRIX_DATA_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(f"cannot create the data dir {MATRIX_DATA_DIR}: {exc}") from exc
MATRIX_ENCRYPTION_KEYS = [
    key.strip()
    for key in (
        _encryption_keys
        or read_or_create_key(MATRIX_DATA_DIR / "secret.key", purpose="encryption key")
    ).split(",")
    if key.strip()
]
# Without MATRIXCLOUD_SECRET_KEY the ring lives in this file, re-read when it changes
# (manage.py rotate_secret_key writes a new primary key into it while servers run).
MATRIX_ENCRYPTION_KEYFILE = None if _encryption_keys else MATRIX_DATA_DIR / "secret.key"
SECRET_KEY = _django_key or read_or_create_key(
    MATRIX_DATA_DIR / "django-secret.key", purpose="Django secret key"
)

DEBUG = env_bool("MATRIX_RUNTIME_DEBUG", False)
if MATRIX_PRODUCTION and DEBUG:
    raise ImproperlyConfigured("MATRIX_RUNTIME_DEBUG cannot be on in a production mode")

# Host header checks stop DNS rebinding against a loopback server.
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver", *MATRIX_EXTRA_ALLOWED_HOSTS]
if MATRIX_HOST not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):  # noqa: S104
    ALLOWED_HOSTS.append(MATRIX_HOST)

# --- Database ----------------------------------------------------------------------
_db_var, _db_url = env_first("MATRIXCLOUD_DATABASE_URL", "MATRIX_RUNTIME_DB_URL", "DATABASE_URL")
if _db_var and _db_url:
    DATABASES = {
        "default": database_config(_db_url, source=_db_var, schema=env_str("MATRIXCLOUD_DB_SCHEMA"))
    }
    MATRIX_DATABASE_KIND = "postgresql"
    MATRIX_DB_PATH: Path | None = None
else:
    # Not the original's matrixcloud.db: an original database next to ours stays intact
    # (docs/COMPATIBILITY.md#c-06).
    MATRIX_DB_PATH = env_path("MATRIX_RUNTIME_DB_PATH", MATRIX_DATA_DIR / "matrixcloud.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(MATRIX_DB_PATH),
            "OPTIONS": {
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                ),
                "transaction_mode": "IMMEDIATE",
                "timeout": env_float("MATRIX_RUNTIME_SQLITE_BUSY_TIMEOUT", 20.0, minimum=1),
            },
        }
    }
    MATRIX_DATABASE_KIND = "sqlite"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Bus -------------------------------------------------------------------------
# `serve` starts an embedded Redis-compatible server and sets REDIS_URL for its
# children; a process started alone without REDIS_URL falls back to an in-process bus.
REDIS_URL = env_str("REDIS_URL")
MATRIX_BUS_PREFIX = env_str("MATRIX_RUNTIME_BUS_PREFIX", "mxc")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py times a socket out after 5 s by default, exactly the layer's
                # blocking pop: an idle receive would then fail (and could lose the
                # message it popped). Reads wait longer than any pop. pool_options():
                # a connection the bus closed is replaced, not used (matrixcloud/lib/bus.py).
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15.0, **pool_options()}],
                "prefix": MATRIX_BUS_PREFIX,
                "capacity": 10_000,
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Worker -------------------------------------------------------------------------
# The job row is the queue (jobs/services.py): each `manage.py worker` runs this many
# runner threads, one per job that may run at once in it (at least two, so one slow job
# never holds up the next while the installation has slots free).
MATRIX_WORKERS = env_int("MATRIX_RUNTIME_WORKERS", max(MATRIX_MAX_CONCURRENT_JOBS, 2), minimum=1)

# --- Django -----------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "matrixcloud",
    "accounts",
    "runtimes",
    "jobs",
    "models_registry",
    "sandbox",
    "matrixcloud.console",
    "matrixcloud.importer",
]

# Content-Security-Policy (matrixcloud/middleware.py): outermost, so every response,
# refusals and static files included, carries it; the pages need no inline script.
MIDDLEWARE = [
    "matrixcloud.middleware.ContentSecurityPolicyMiddleware",
    "matrixcloud.middleware.ApiGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
APPEND_SLASH = False

ROOT_URLCONF = "matrixcloud.urls"
ASGI_APPLICATION = "matrixcloud.asgi.application"
WSGI_APPLICATION = "matrixcloud.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "accounts.hashers.GoPBKDF2PasswordHasher",
]
PASSWORD_MAX_LENGTH = 1024
SESSION_TOKEN_MAX_AGE_DAYS = env_int("MATRIX_RUNTIME_SESSION_MAX_AGE_DAYS", 30, minimum=1)
SESSION_TOKEN_IDLE_HOURS = env_int("MATRIX_RUNTIME_SESSION_IDLE_HOURS", 7 * 24, minimum=1)
LOGIN_FAILURES_BEFORE_BACKOFF = env_int("MATRIX_RUNTIME_LOGIN_FAILURES", 5, minimum=1)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 8},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = MATRIX_DATA_DIR / "static"
# The console's CSS and JS are served by the app itself (works air-gapped), found in
# the apps without a collectstatic step.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(exist_ok=True)  # collectstatic's target; whitenoise warns when missing
LOGIN_URL = "/login"
LOGIN_REDIRECT_URL = "/console/"

DATA_UPLOAD_MAX_MEMORY_SIZE = MATRIX_MAX_BODY_BYTES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

EMAIL_BACKEND = env_str(
    "MATRIXCLOUD_EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if not env_str("MATRIXCLOUD_SMTP_HOST")
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("MATRIXCLOUD_SMTP_HOST", "localhost")
EMAIL_PORT = env_int("MATRIXCLOUD_SMTP_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("MATRIXCLOUD_SMTP_USER")
EMAIL_HOST_PASSWORD = env_secret("MATRIXCLOUD_SMTP_PASSWORD")
EMAIL_USE_TLS = env_bool("MATRIXCLOUD_SMTP_STARTTLS", False)
DEFAULT_FROM_EMAIL = env_str("MATRIXCLOUD_EMAIL_FROM", "MatrixCloud <noreply@localhost>")

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["matrixcloud.api.parsers.LenientJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.SessionTokenAuthentication",
        "accounts.authentication.ConsoleSessionAuthentication",
        "matrixcloud.api.authentication.OperatorTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["matrixcloud.api.permissions.PassesGate"],
    "EXCEPTION_HANDLER": "matrixcloud.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "COMPACT_JSON": True,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Matrix Runtime API",
    "DESCRIPTION": (
        "MatrixCloud: MCP sandboxes, typed jobs with SSE events, Hugging Face models and "
        "remote runtimes. Wire-compatible with the Matrix Runtime API 0.2.0."
    ),
    "VERSION": "0.2.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "SERVERS": [{"url": "http://localhost:8080", "description": "Local"}],
    "APPEND_COMPONENTS": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    },
    "SECURITY": [{"bearerAuth": []}, {}],
    "AUTHENTICATION_WHITELIST": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "matrixcloud.api.schema.add_guard_responses",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": env_str("MATRIX_RUNTIME_LOG_LEVEL", "INFO")},
}

# --- Trust boundaries: audit keys, model roots, content security --------------------
# Audit-chain MAC keys derived from retired ring keys, kept so the records they signed
# still verify (matrixcloud/lib/crypto.py, accounts/audit.py).
MATRIX_DERIVED_KEYFILE = MATRIX_DATA_DIR / "derived.keys"
# Where mount_volume and file:// model sources may point (matrixcloud/lib/paths.py):
# absolute directories, comma-separated; default the data dir's models area.
MATRIX_MODEL_ROOTS = [
    Path(root) for root in env_list("MATRIX_RUNTIME_MODEL_ROOTS", [str(MATRIX_DATA_DIR / "models")])
]
if not all(root.is_absolute() for root in MATRIX_MODEL_ROOTS):
    raise ImproperlyConfigured("MATRIX_RUNTIME_MODEL_ROOTS must list absolute directories")
