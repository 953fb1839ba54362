"""onwatch settings: one module, every knob an environment variable with a safe default.

Reading this module never touches the disk; `onwatch` prepares the data directory,
secret key and key file before Django starts (see onwatch/startup.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.utils.csp import CSP

from onwatch.config import (
    PROXY_HEADER,
    ConfigError,
    base_url,
    data_dir,
    database_from_url,
    env,
    env_bool,
    env_int,
    is_local_name,
    own_domain,
    plain_http_over_network,
    proxy_token,
)

BASE_DIR = Path(__file__).resolve().parent
DATA_DIR = data_dir()

HOST = env("ONWATCH_HOST", "127.0.0.1")
PORT = env_int("ONWATCH_PORT", 8000, minimum=1, maximum=65535)
# Web processes sharing the port. Two by default: on 2 cores two take some 2,400 pings a
# second where one takes 1,500-1,900, and being forked from one parent that loaded Django
# (onwatch/prefork.py) the second costs only what it changes of that memory. More cores,
# more pings: raise it.
WEB_WORKERS = env_int("ONWATCH_WEB_WORKERS", 2, minimum=1, maximum=32)
# Pings a second one heartbeat may send (with bursts of ten seconds' worth), per web process.
PING_RATE_LIMIT = env_int("ONWATCH_PING_RATE_LIMIT", 10, minimum=1)
# Error events a second per project (each web process counts its own), and the free disk
# below which events are refused with 429 rather than risk a full disk.
ERRORS_RATE_LIMIT = env_int("ONWATCH_ERRORS_RATE_LIMIT", 100, minimum=1)
ERRORS_MIN_FREE_MB = env_int("ONWATCH_ERRORS_MIN_FREE_MB", 500)
# Envelopes answered 200 and waiting to be digested (errors/digest.py), at most: more are
# refused with 429 until the digest catches up.
ERRORS_QUEUE_MAX = env_int("ONWATCH_ERRORS_QUEUE_MAX", 20_000, minimum=1)
# Whether this web process digests what its fast routes queued (core/ingest/digester.py):
# off on web processes that should only take requests while others (on PostgreSQL) digest.
INGEST_DIGEST = env_bool("ONWATCH_INGEST_DIGEST", True)
# Caddy in front of the services deployed on this machine (deploys/caddy.py): its ports for
# their traffic, and the loopback port of its slot health server.
CADDY_HTTPS = env_bool("ONWATCH_CADDY_HTTPS", True)
CADDY_HTTP_PORT = env_int("ONWATCH_CADDY_HTTP_PORT", 80, minimum=1, maximum=65535)
CADDY_HTTPS_PORT = env_int("ONWATCH_CADDY_HTTPS_PORT", 443, minimum=1, maximum=65535)
CADDY_HEALTH_PORT = env_int("ONWATCH_CADDY_HEALTH_PORT", 2020, minimum=1, maximum=65535)
# `onwatch up --domain`: onwatch reached through that Caddy at this name, over HTTPS.
DOMAIN = own_domain(env("ONWATCH_DOMAIN", ""), HOST)
_caddy_port = "" if CADDY_HTTPS_PORT == 443 else f":{CADDY_HTTPS_PORT}"
SITE = base_url(f"https://{DOMAIN}{_caddy_port}" if DOMAIN else f"http://localhost:{PORT}")
if DOMAIN and SITE.host != DOMAIN:
    raise ConfigError(
        f"ONWATCH_BASE_URL={SITE.origin} names another host than ONWATCH_DOMAIN={DOMAIN}; "
        "unset ONWATCH_BASE_URL (the domain sets it)"
    )
SITE_ROOT = SITE.origin
# Refused unless chosen: then cookies go without Secure and every page carries a warning.
PLAIN_HTTP = plain_http_over_network(SITE, env_bool("ONWATCH_ALLOW_PLAIN_HTTP", False))

DEBUG = env_bool("ONWATCH_DEBUG", False)
# The secret key is generated into the data directory on first run (startup.py); a
# SECRET_KEY variable or SECRET_KEY_FILE wins when given.
SECRET_KEY = env("SECRET_KEY", "") or env("ONWATCH_SECRET_KEY", "")
if not SECRET_KEY:
    _key_path = DATA_DIR / "secret_key"
    SECRET_KEY = _key_path.read_text().strip() if _key_path.is_file() else ""
# Left empty when neither exists: Django then refuses to start rather than sign with a
# guessable key.

# Pipelines' workspaces and dependency caches: outside the data directory (0700), which
# the sandbox's step user must never reach, yet a folder that user may pass through.
WORK_DIR = Path(env("ONWATCH_WORK_DIR", f"{DATA_DIR}-work")).expanduser().absolute()
# A pipeline does not start with less free space than this on the work folder's disk.
WORK_MIN_FREE_MB = env_int("ONWATCH_WORK_MIN_FREE_MB", 500)

# The authorized_keys file of the user onwatch runs as: people's keys for `git push`
# (only the block between the "# onwatch" marker lines is onwatch's; see core/pushkeys.py).
AUTHORIZED_KEYS = (
    Path(env("ONWATCH_AUTHORIZED_KEYS", "~/.ssh/authorized_keys")).expanduser().absolute()
)

# As root, each service's processes run as a system user of its own: this and its id.
SERVICE_USER_PREFIX = env("ONWATCH_SERVICE_USER_PREFIX", "onwatch-svc-")

KEY_FILE = Path(env("ONWATCH_KEY_FILE", str(DATA_DIR / "keyring.json"))).expanduser().absolute()
# The audit log's newest entry, witnessed outside the database (core/audit_head.py).
AUDIT_HEAD_FILE = (
    Path(env("ONWATCH_AUDIT_HEAD_FILE", str(DATA_DIR / "audit-head.json"))).expanduser().absolute()
)

ALLOWED_HOSTS = [SITE.host, "localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS += [h.strip() for h in env("ONWATCH_ALLOWED_HOSTS", "").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [SITE.origin]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "onwatch.core",
    "onwatch.accounts",
    "onwatch.alerts",
    "onwatch.uptime",
    "onwatch.backups",
    "onwatch.deploys",
    "onwatch.errors",
    "onwatch.web",
]

MIDDLEWARE = [
    # Before anything asks whether a request came over HTTPS.
    "onwatch.core.middleware.ProxyTokenMiddleware",
    # First: its headers go on every answer to browser SDKs, another middleware's too.
    "onwatch.errors.middleware.SdkCorsMiddleware",
    "onwatch.core.middleware.RequestIdMiddleware",
    # Before the HTTPS redirect it would otherwise loop on.
    "onwatch.core.middleware.UnnamedProxyHttpsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "onwatch.accounts.middleware.SessionLifetimeMiddleware",
    "onwatch.accounts.middleware.RequireMFAMiddleware",
    "onwatch.core.middleware.OrganizationMiddleware",
]

ROOT_URLCONF = "onwatch.urls"
ASGI_APPLICATION = "onwatch.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "onwatch.web.context.navigation",
                "onwatch.web.context.plain_http",
                "onwatch.web.context.unnamed_proxy",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env("DATABASE_URL", ""), DATA_DIR / "onwatch.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The database cache is shared by every process, so sign-in rate limits hold across them.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "onwatch_cache",
    }
}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"

# allauth: e-mail sign-in, no open sign-up (accounts come from one-time invite links),
# rate limits on every sign-in path, and MFA with all three kinds of second factor.
ACCOUNT_ADAPTER = "onwatch.accounts.adapter.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = "username"
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    # Wrong passwords and codes: 5 per account (a password or code being guessed), and
    # per address only as many as a whole office behind one NAT or proxy might mistype.
    "login_failed": "100/15m/ip,5/5m/key",
    "reset_password": "5/h/ip,3/h/key",
    "change_password": "5/m/user",
    "reauthenticate": "10/m/user",
}
# Encrypts TOTP secrets and recovery-code seeds with the keyring.
MFA_ADAPTER = "onwatch.accounts.adapter.MFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "webauthn", "recovery_codes"]
# Enrolment keeps the secret it showed; the code steps say until when they are paused.
MFA_FORMS = {
    "activate_totp": "onwatch.accounts.forms.ActivateTOTPForm",
    "authenticate": "onwatch.accounts.forms.AuthenticateForm",
    "reauthenticate": "onwatch.accounts.forms.ReauthenticateForm",
}
MFA_PASSKEY_LOGIN_ENABLED = True
MFA_TOTP_ISSUER = "onwatch"
# Accept the neighbouring 30-second codes too (RFC 6238's advice for clock drift and a code
# typed as it rolls over); allauth's default accepts only the current one.
MFA_TOTP_TOLERANCE = 1
# allauth refuses MFA for unverified addresses so a squatter who signs up with someone
# else's address cannot lock them out; here accounts only come from one-time invites, and
# onwatch may have no mail server to verify with.
MFA_ALLOW_UNVERIFIED_EMAIL = True
# WebAuthn needs a secure context; localhost counts as one in browsers.
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = not SITE.https

# Sessions: an idle timeout (every request pushes it back) and an absolute lifetime.
SESSION_COOKIE_AGE = env_int("ONWATCH_SESSION_IDLE_MINUTES", 120, minimum=5) * 60
SESSION_SAVE_EVERY_REQUEST = True
SESSION_MAX_LIFETIME = env_int("ONWATCH_SESSION_MAX_HOURS", 12, minimum=1) * 3600
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Browsers accept Secure cookies on http://localhost, so these hold in development too.
SESSION_COOKIE_SECURE = not PLAIN_HTTP
CSRF_COOKIE_SECURE = not PLAIN_HTTP
CSRF_COOKIE_HTTPONLY = True

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# HSTS is only ever sent over HTTPS; behind Caddy (or any proxy) the scheme comes from it.
# A local name (tls internal) gets a day, for itself alone: its certificate lives only as
# long as Caddy's data folder, and a browser told to insist on HTTPS for a year (and for
# every name below it) would refuse the name after a reinstall or a plain restart.
_public = not (DOMAIN and is_local_name(DOMAIN))
SECURE_HSTS_SECONDS = env_int("ONWATCH_HSTS_SECONDS", 31536000 if _public else 86400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _public and env_bool("ONWATCH_HSTS_INCLUDE_SUBDOMAINS", True)
# The preload token alone changes nothing in browsers (a domain joins their lists only when
# someone submits it), and it lets `check --deploy` pass clean; ONWATCH_HSTS_PRELOAD=false
# drops it.
SECURE_HSTS_PRELOAD = _public and env_bool("ONWATCH_HSTS_PRELOAD", True)
SECURE_SSL_REDIRECT = SITE.https
# A monitoring probe on this machine asks http://127.0.0.1:PORT/health/ and takes a
# redirect for a failure (or follows it to a name it cannot reach); the answer is "ok" and
# nothing else, so plain HTTP gives nothing away. Through Caddy it is HTTPS anyway.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
if DOMAIN:
    # Plain requests to the loopback port go to the site, not to the host they named
    # (http://localhost:8000 would become https://localhost:8000, where nothing answers).
    SECURE_SSL_HOST = SITE.origin.split("://", 1)[1]
    # Ping URLs and DSNs handed out before the domain still name the loopback port: curl
    # takes a redirect for success and SDKs do not follow one on POST, so those would be
    # lost. onwatch listens on loopback alone here, so only this machine reaches them.
    SECURE_REDIRECT_EXEMPT += [r"^ping/", r"^api/\d+/(envelope|store)/$"]
    # Only Caddy's token makes a request HTTPS (core/middleware.py's ProxyTokenMiddleware).
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + PROXY_HEADER.upper().replace("-", "_"), "https")
# Without a domain, the scheme is the web server's own (cli.cmd_web): uvicorn takes
# X-Forwarded-Proto from the proxies named in ONWATCH_TRUSTED_PROXIES alone. Django's
# SECURE_PROXY_SSL_HEADER would take it from any program that reaches the port.
PROXY_TOKEN = proxy_token(SECRET_KEY) if DOMAIN and SECRET_KEY else ""
# Whose X-Forwarded-For names the client besides onwatch's own Caddy (its requests carry
# the token: core/proxied.py): nobody by default. Any program on this machine reaches the
# loopback port, so trusting 127.0.0.1 would let it write the address that sign-in
# lock-outs and the audit log record; a proxy of one's own is named here on purpose.
TRUSTED_PROXIES = env("ONWATCH_TRUSTED_PROXIES", "")

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}

STATIC_URL = "/static/"
STATIC_ROOT = None
STATICFILES_DIRS = [BASE_DIR / "static"]
# Whitenoise serves files straight from the installed packages, so no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_FROM_EMAIL = env("ONWATCH_FROM_EMAIL", "onwatch@localhost")
# Any member sets their own alert channel: by default it may reach public addresses only,
# not this machine or its network (alerts/apprise.py says why). The operator may allow it.
OWN_CHANNELS_PRIVATE = env_bool("ONWATCH_OWN_CHANNELS_PRIVATE", False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("ONWATCH_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# Durable jobs: a running job's lease is renewed every LEASE/3 seconds; a lease that runs
# out means the worker died and the job is marked interrupted.
JOB_LEASE_SECONDS = env_int("ONWATCH_JOB_LEASE_SECONDS", 30, minimum=3)
JOB_POLL_SECONDS = env_int("ONWATCH_JOB_POLL_SECONDS", 1, minimum=1)
SCHEDULER_TICK_SECONDS = env_int("ONWATCH_SCHEDULER_TICK_SECONDS", 5, minimum=1)
# The log lines of jobs that ended longer ago than this are removed each night (their
# state, error and result stay).
JOB_LOG_DAYS = env_int("ONWATCH_JOB_LOG_DAYS", 30, minimum=1, maximum=3650)
# Slots per job queue in every worker (threads): deliveries mostly wait on the network;
# long work (backups, drills, restores) is heavy, so one at a time on a small machine.
# Alerts always keep a slot; 0 leaves a queue to the workers of other machines.
JOB_QUEUES = {
    "alerts": env_int("ONWATCH_QUEUE_ALERTS", 4, minimum=1, maximum=64),
    "short": env_int("ONWATCH_QUEUE_SHORT", 2, minimum=0, maximum=64),
    "long": env_int("ONWATCH_QUEUE_LONG", 1, minimum=0, maximum=64),
    # Pipelines run the team's tests: one at a time on a small machine, beside the others.
    "pipelines": env_int("ONWATCH_QUEUE_PIPELINES", 1, minimum=0, maximum=64),
    # Automatic rollbacks: never behind a pipeline, and never holding the short queue's
    # slots (every watch's looks) for the minute and more a switch takes.
    "rollbacks": env_int("ONWATCH_QUEUE_ROLLBACKS", 1, minimum=0, maximum=64),
}
# Probers hold each due monitor under a lease they renew every LEASE/3 seconds; a prober
# that dies lets its leases run out and another one takes its monitors over.
PROBER_LEASE_SECONDS = env_int("ONWATCH_PROBER_LEASE_SECONDS", 30, minimum=3)
PROBER_CONCURRENCY = env_int("ONWATCH_PROBER_CONCURRENCY", 500, minimum=1, maximum=10000)
# Monitors one prober holds claimed at once: past this, the rest is left to other probers.
PROBER_BACKLOG = env_int("ONWATCH_PROBER_BACKLOG", 2000, minimum=10)
# How often a followed job's live log asks again whether its viewer may still see it (a
# stream may stay open for hours; core/logstream.py).
LOG_STREAM_RECHECK_SECONDS = env_int(
    "ONWATCH_LOG_STREAM_RECHECK_SECONDS", 15, minimum=1, maximum=3600
)
API_TOKEN_DEFAULT_DAYS = env_int("ONWATCH_API_TOKEN_DAYS", 90, minimum=1, maximum=3650)
# A file each web process appends where its ingest batches spent their time (core/ingest/
# timings.py; bench/pings.py sets it); empty: nothing measured.
INGEST_TIMINGS = env("ONWATCH_INGEST_TIMINGS", "")
# SQLite's WAL is emptied once it passes this many MiB (core/ingest/writer.py), so steady
# ingest does not fill the disk.
SQLITE_WAL_LIMIT_MB = env_int("ONWATCH_SQLITE_WAL_LIMIT_MB", 16, minimum=1)

LOGGING: dict[str, Any] = {  # logging.config.dictConfig's schema
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s%(request_id)s: %(message)s"}
    },
    "filters": {
        "quiet_ping_refusals": {"()": "onwatch.logfilters.QuietPingRefusals"},
        "request_id": {"()": "onwatch.logfilters.RequestId"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env("ONWATCH_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Filters sit on loggers, not handlers, so the records never reach any handler.
        "django.request": {"filters": ["quiet_ping_refusals"]},
    },
}
