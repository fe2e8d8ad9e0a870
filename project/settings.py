"""Django settings, read from the environment; nothing here needs editing to deploy."""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from project.env import (env_bool, env_choice, env_database, env_float, env_int, env_list, env_log_level, env_rate,
                         env_str, env_url)

BASE_DIR = Path(__file__).resolve().parent.parent

# Off unless asked for (DEBUG=1): a server started with nothing set is a production server.
# ./scripts/run and the test suite turn it on for their own processes.
DEBUG = env_bool("DEBUG", False)

# A development key: fine for trying the chat on a laptop with DEBUG=1, refused otherwise.
DEV_SECRET_KEY = "dev-insecure-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set: the development key is accepted only with DEBUG=1. Set SECRET_KEY to a long "
        "random string (python3 -c 'import secrets; print(secrets.token_urlsafe(50))'), or DEBUG=1 to develop.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's files, served from this site: the API docs work offline.
    "drf_spectacular_sidecar",
    "chat",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "project.wsgi.application"

DATABASES = {
    "default": env_database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
                            conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several worker processes write to one SQLite file: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock up front (no deadlocked upgrades) and the
    # timeout makes a writer wait for the lock instead of failing with "database is locked".
    # A commit that takes the WAL past 10,000 pages copies it into the database (a checkpoint, with
    # its fsyncs) before it returns, rather than past SQLite's 1,000: a message rewrites the same
    # few hot pages (the newest leaf of the table and of each index), which a checkpoint copies
    # once however often they changed; two processes inserting spent about a quarter less CPU per
    # insert (docs/performance.md). A bus worker checkpoints from a thread of its own long before
    # that (workers/checkpoints.py), so that no request waits for one; the threshold bounds the
    # WAL (about 40 MB, cut back to 64 MB at most after a checkpoint) should that thread lag.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                        "PRAGMA wal_autocheckpoint=10000; PRAGMA journal_size_limit=67108864;",
    }
    # The test database is a file too, so the processes that end-to-end tests start share it;
    # one per test run, so that two runs at once never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".run" / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # chat.throttles: password logins per client address (the token endpoint and /login/), and
    # each user's writes at the WebSocket's RATE_LIMIT. Counted in the default cache (per process).
    "DEFAULT_THROTTLE_RATES": {
        "login": env_rate("THROTTLE_LOGIN_RATE", "10/min"),
        "write": env_rate("THROTTLE_WRITE_RATE", "30/s"),
    },
    # The client address is REMOTE_ADDR; behind N proxies that each append to X-Forwarded-For
    # (deploy/nginx.conf: 1), the Nth address from its end. Never the client's own header.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0, minimum=0),
}

# The OpenAPI schema (/api/schema/) and Swagger UI (/api/docs/), both public.
SPECTACULAR_SETTINGS = {
    "TITLE": "Chat REST API",
    "DESCRIPTION": "The chat for clients that hold no WebSocket, with the WebSocket protocol's rules. "
                   "See docs/rest-api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No online validator badge: the page loads nothing from another host.
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None},
}

# The chat's settings (chat/conf.py: every key, its default and its check), from the environment.
CHAT = {
    "MAX_MESSAGE_LENGTH": env_int("MAX_MESSAGE_LENGTH", 4000, minimum=1),
    "REDIS_URL": env_url("REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss", "unix")),
    # REDIS_URL names one node of a Redis Cluster: the gateway reads the same variable.
    "REDIS_CLUSTER": env_bool("REDIS_CLUSTER", False),
    "WORKER_RESPONSE_TOPIC": env_str("WORKER_RESPONSE_TOPIC", "worker_response"),
    # How late a killed worker leaves the gateways' choice (workers/discovery.py).
    "WORKER_TTL": env_float("WORKER_TTL", 10, minimum=1),
    # How long the change feed keeps a change (manage.py prune_changes); older cursors are expired.
    "SYNC_RETENTION_DAYS": env_int("SYNC_RETENTION_DAYS", 30, minimum=1),
    # How long a WebSocket ticket (chat.tickets), which the chat page authenticates with, is good for.
    "TICKET_MAX_AGE": env_int("TICKET_MAX_AGE", 60, minimum=1),
    # Where the chat page opens its WebSocket; empty means "the page's host, port 8080".
    "GATEWAY_URL": env_url("GATEWAY_URL", "", ("ws", "wss")),
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOG_LEVEL = env_log_level("LOG_LEVEL", "INFO")
# `text` for people; `json` for machines: one object a line with time, level, logger, message and
# the context fields (request_id…). The gateway reads the same setting and uses the same formatters.
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # Standard library only (no aiohttp, no Redis): shared with the gateway.
        "text": {"()": "websockets_gateway.logs.TextFormatter"},
        "json": {"()": "websockets_gateway.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # runserver's request lines have a handler of their own in Django's defaults; in JSON they
        # come to ours, so that every line of the web part is JSON too.
        **({"django.server": {"handlers": ["console"], "level": "INFO", "propagate": False}}
           if LOG_FORMAT == "json" else {}),
    },
}
