"""The one settings module. Everything that differs between machines comes from the environment."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from pools.keys import STARTUP_TAINT_KEY

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DEBUG = env_bool("DJANGO_DEBUG", False)
_secret = env_str("DJANGO_SECRET_KEY")
if _secret is None:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required unless DJANGO_DEBUG=true")
    _secret = "insecure-development-key-only-for-DJANGO_DEBUG"
elif not DEBUG and (len(_secret) < 50 or len(set(_secret)) < 5):
    # Sessions and CSRF tokens are signed with it: a short key is guessable offline.
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be at least 50 characters (e.g. openssl rand -hex 32) unless DJANGO_DEBUG=true"
    )
SECRET_KEY = _secret
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS") or (["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pools",
    "workers",
]
# The demo's EC2 and Kubernetes API emulators (`manage.py sandbox`) are an app of their own, installed only by
# development settings (DJANGO_DEBUG in a checkout), tests/settings.py and sandbox/settings.py (the Docker
# `sandbox` image). The production image has no sandbox/ directory at all.
if DEBUG and (BASE_DIR / "sandbox" / "apps.py").is_file():
    INSTALLED_APPS.append("sandbox")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "eipdash.middleware.ReadAccessMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during authentication into its response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "eipdash.urls"
WSGI_APPLICATION = "eipdash.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'eipdash.sqlite3'}") or "",
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(exist_ok=True)
    # Workers, beat and web write concurrently: WAL, a busy timeout, and BEGIN IMMEDIATE so that a
    # read-then-write transaction never fails with "database is locked" halfway through.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes) on every login form, /accounts/login/ and /admin/login/ alike: after
# EIPDASH_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is locked out
# for EIPDASH_LOGIN_LOCKOUT_MINUTES, even with the right password. Keyed on the pair so that a stranger
# cannot lock an operator out from elsewhere. The address is REMOTE_ADDR: behind a proxy that is the
# proxy's, and the lockout becomes per username.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("EIPDASH_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("EIPDASH_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"
AXES_VERBOSE = False
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development serves from the finders; production runs collectstatic into STATIC_ROOT (Dockerfile).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
if DEBUG:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# A CSRF refusal under /api/ answers JSON, as the rest of the API; the dashboard keeps Django's page.
CSRF_FAILURE_VIEW = "eipdash.csrf.csrf_failure"

# HTTPS, for a deployment behind TLS. Off by default so that the plain-HTTP sandbox and compose demo work.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Only behind a proxy that sets X-Forwarded-Proto itself and strips it from clients: otherwise any
# client could claim HTTPS.
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The pages load scripts and styles only from /static/ (htmx is vendored, base.html sets htmx not to
# inject its indicator <style>); no inline script, no eval. style-src-attr allows the style="width: …"
# attributes of the pool bars and chart legends, which cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Redis and Celery -------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL is None and not DEBUG:
    # Redis is the Celery broker and holds the per-spec lease that keeps two passes of one launch spec from
    # running side by side: production must not start without it. `make run` and `make test` start an
    # embedded Redis and set REDIS_URL; DEBUG runs of manage.py fall back to a local one.
    raise ImproperlyConfigured("REDIS_URL is required unless DJANGO_DEBUG=true (the Celery broker and the lease)")

# --- REST API (/api/v1/, pools/api/) ----------------------------------------------------------
# Per-token (or per-user, for the session) request rate of the API, DRF's "N/s|min|hour|day" form.
EIPDASH_API_RATE: str = env_str("EIPDASH_API_RATE", "600/min") or "600/min"
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", EIPDASH_API_RATE):
    raise ImproperlyConfigured(f"EIPDASH_API_RATE={EIPDASH_API_RATE!r}: give requests per period, e.g. 600/min, 20/s")
# API requests without a valid credential (none, or a wrong, expired or revoked token) per client address: 401
# until this rate is spent, then 429 (pools/api/throttle.py). A valid credential is never refused by it.
EIPDASH_API_ANON_RATE: str = env_str("EIPDASH_API_ANON_RATE", "60/min") or "60/min"
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", EIPDASH_API_ANON_RATE):
    raise ImproperlyConfigured(
        f"EIPDASH_API_ANON_RATE={EIPDASH_API_ANON_RATE!r}: give requests per period, e.g. 60/min")
# The client address of the API's per-address limit is REMOTE_ADDR, as for the login lockout. Behind N proxies
# that each append to X-Forwarded-For (an ingress controller: 1), set N: the address the outermost one appended
# counts. Never more than the proxies really there: the entries before theirs are written by the client.
EIPDASH_NUM_PROXIES = env_int("EIPDASH_NUM_PROXIES", 0, minimum=0)
# The longest an API token lives, in days (0: no maximum). A token asked for longer, or for "never", is refused
# at creation; an older token stops authenticating once it is this old, whatever its own expiry says.
EIPDASH_API_TOKEN_MAX_DAYS = env_int("EIPDASH_API_TOKEN_MAX_DAYS", 90, minimum=0)
# The default cache stays Django's per-process memory. The API's rate counters are not a cache: they live in
# Redis at REDIS_URL (pools/api/throttle.py), so that every gunicorn process counts against one limit; without
# Redis (DEBUG) each process counts alone.
CACHES = {
    # Per process. The capacity figures keep two entries per launch spec, the pool-use series a few: Django's
    # default of 300 entries would evict them on every request past about 150 specs.
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"MAX_ENTRIES": 10_000}},
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: its WWW-Authenticate header makes an unauthenticated request a 401, not a 403.
        "pools.api.auth.BearerTokenAuthentication",
        # The dashboard's session, with DRF's CSRF check on unsafe methods.
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["pools.api.auth.IsReader"],
    "DEFAULT_THROTTLE_CLASSES": ["pools.api.throttle.TokenRateThrottle"],
    # Counts the requests that end before the throttles run (failed authentication): 429 past their rate.
    "EXCEPTION_HANDLER": "pools.api.throttle.exception_handler",
    # For DRF's own get_ident, should a view use its throttles: never trust a client-written X-Forwarded-For.
    "NUM_PROXIES": EIPDASH_NUM_PROXIES,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF parses a session request's body for its CSRF check: through the views' own decoding (pools/api/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["pools.api.parsers.SpecJsonParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "eipdash API",
    "DESCRIPTION": "Launch specs in Spot Ocean's shape, the Elastic IP pool, nodes, history and manual reassigns. "
                   "Authenticate with `Authorization: Bearer <token>` (`manage.py api_token create USERNAME`).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["pools.api.auth.IsReader"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
CELERY_BROKER_URL = REDIS_URL or "redis://127.0.0.1:6379/0"
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
# A pass is a handful of API calls; anything slower than this is stuck.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("EIPDASH_TASK_SOFT_TIME_LIMIT", 60)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 15
# A pass stops itself between steps at this deadline and leaves the rest to the next pass: the soft limit
# cannot be relied on (botocore turns SoftTimeLimitExceeded raised inside a call into an HTTP error and
# retries), so the pass must end on its own well before it. Capped below the soft limit.
EIPDASH_PASS_SECONDS = min(env_int("EIPDASH_PASS_SECONDS", CELERY_TASK_SOFT_TIME_LIMIT * 2 // 3, minimum=1),
                           max(1, CELERY_TASK_SOFT_TIME_LIMIT - 10))
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- eipdash ---------------------------------------------------------------------------------
EIPDASH_RECONCILE_SECONDS = env_int("EIPDASH_RECONCILE_SECONDS", 5)
# Celery beat's schedule (read by eipdash/celery.py through the CELERY_ namespace).
CELERY_BEAT_SCHEDULE = {
    # The safety net: every enabled launch spec is reconciled against EC2 and Kubernetes on this beat,
    # whatever the node watch saw or missed.
    "reconcile-all": {
        "task": "workers.tasks.reconcile_all",
        "schedule": float(EIPDASH_RECONCILE_SECONDS),
        # No `expires`: Celery compares it, a time on the beat's host, with the worker's clock, and a worker
        # seconds ahead dropped every tick. Ticks that queue up while no worker runs are folded into one by
        # reconcile_all itself, on Redis's clock (pools/locks.py take_tick).
    },
    # Retention (EIPDASH_RETENTION_DAYS, 0: off): once a day, at a quiet time, in small batches.
    "prune-history": {
        "task": "workers.tasks.prune_history",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 3600.0},
    },
}
EIPDASH_STARTUP_TAINT: str = env_str("EIPDASH_STARTUP_TAINT", STARTUP_TAINT_KEY)
EIPDASH_METRICS_TOKEN = env_str("EIPDASH_METRICS_TOKEN")
# The single-flight lock outlives the hard task time limit, so a killed task never leaves a pass
# running beside a new one.
EIPDASH_SPEC_LOCK_SECONDS = CELERY_TASK_TIME_LIMIT + 30
# The per-spec lease: short, renewed by the running pass every third of it, so that a SIGKILLed worker
# holds its spec for at most this long (the next pass starts within it plus one beat).
EIPDASH_LEASE_SECONDS = env_int("EIPDASH_LEASE_SECONDS", 10, minimum=8)  # > the longest attempt to change AWS (7 s)
# EC2's request budget per account and region (workers/budget.py): every worker takes a token before each EC2
# call, from buckets shared through Redis that mirror EC2's own: mutating calls (AssociateAddress,
# DisassociateAddress) 50 tokens refilled 5/s, Describe* 100 refilled 20/s. Lower them when other tools of the
# account spend the same budget; raise them only if AWS raised the account's limits.
EIPDASH_EC2_MUTATE_BURST = env_int("EIPDASH_EC2_MUTATE_BURST", 50)
EIPDASH_EC2_MUTATE_RATE = env_int("EIPDASH_EC2_MUTATE_RATE", 5)
EIPDASH_EC2_READ_BURST = env_int("EIPDASH_EC2_READ_BURST", 100)
EIPDASH_EC2_READ_RATE = env_int("EIPDASH_EC2_READ_RATE", 20)
# How many AWS and Kubernetes calls of one pass's steps run at once (workers/apply.py).
EIPDASH_STEP_CONCURRENCY = env_int("EIPDASH_STEP_CONCURRENCY", 16)
# A steady pass reuses a running node's instance facts (state, primary ENI, private IP) from its Node row;
# DescribeInstances confirms them again once they are older than this (new and changing instances always).
EIPDASH_INSTANCE_RECHECK_SECONDS = env_int("EIPDASH_INSTANCE_RECHECK_SECONDS", 300, minimum=0)
# The region's EIP quota and its subnets' egress paths are read again once they are older than this
# (workers/region_facts.py), whichever worker's pass comes first.
EIPDASH_REGION_FACTS_SECONDS = env_int("EIPDASH_REGION_FACTS_SECONDS", 300, minimum=30)
# The cluster that launch specs join when they name none.
EIPDASH_CLUSTER_NAME: str = env_str("EIPDASH_CLUSTER_NAME", "default")
EIPDASH_CLUSTER_REGION: str = env_str("EIPDASH_CLUSTER_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
EIPDASH_KUBE_CONTEXT: str = env_str("EIPDASH_KUBE_CONTEXT", "")
# A cluster row's kubeconfig file must be under this directory (empty: no files), and no exec plugin unless allowed.
EIPDASH_KUBECONFIG_DIR: str = env_str("EIPDASH_KUBECONFIG_DIR", "")
EIPDASH_KUBECONFIG_ALLOW_EXEC = env_bool("EIPDASH_KUBECONFIG_ALLOW_EXEC", False)

# AWS's price of one public IPv4 address per hour, in US dollars: the cost figures of the capacity report
# (pools/capacity.py). BYOIP addresses are not billed.
_ipv4_hourly_usd: str = env_str("EIPDASH_IPV4_HOURLY_USD", "0.005")
if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", _ipv4_hourly_usd):
    raise ImproperlyConfigured(
        f"EIPDASH_IPV4_HOURLY_USD={_ipv4_hourly_usd!r}: give US dollars per address-hour, e.g. 0.005")
EIPDASH_IPV4_HOURLY_USD = float(_ipv4_hourly_usd)

# History older than this many days is pruned daily (prune_history); 0 keeps everything.
EIPDASH_RETENTION_DAYS = env_int("EIPDASH_RETENTION_DAYS", 90, minimum=0)

# EIPDASH_LOG_FORMAT=json: one JSON object per line (timestamp, level, logger, message, and spec, node, ip,
# allocation_id when known) from web, worker, beat and watch alike; anything else is the plain format.
EIPDASH_LOG_FORMAT = (env_str("EIPDASH_LOG_FORMAT", "plain") or "plain").lower()
# Celery would replace the root logger's handler with its own plain format: with JSON it keeps ours.
CELERY_WORKER_HIJACK_ROOT_LOGGER = EIPDASH_LOG_FORMAT != "json"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "pools.logs.EipdashJsonFormatter"},
    },
    "filters": {"task_success_without_result": {"()": "pools.logs.TaskSuccessWithoutResult"}},
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "json" if EIPDASH_LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": env_str("EIPDASH_LOG_LEVEL", "INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}, "axes": {"level": "WARNING"},
                # Celery's success line repeated a pass's report, which the task logs itself (pools/logs.py).
                "celery.app.trace": {"filters": ["task_success_without_result"]}},
}
