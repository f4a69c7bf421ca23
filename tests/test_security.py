"""Admin hardening: the login limit (per client IP and per username, in Redis), secure cookies
and security headers outside DEBUG, a Content-Security-Policy on every page."""

import runpy
import time
from pathlib import Path

import environ
import pytest
from django.test import Client

from mailqueue.scheduling import connection as redis_connection

ROOT = Path(__file__).resolve().parent.parent
LOGIN_URL = "/admin/login/"
PASSWORD = "correct-horse-battery"
# Names of the settings the production block of config/settings.py sets.
SECURITY_SETTINGS = (
    "SECURE_PROXY_SSL_HEADER",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
)


def load_config(monkeypatch, **variables: str) -> dict:
    """config/settings.py evaluated afresh with these variables (and no developer's .env)."""
    for name in ("DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(environ.Env, "read_env", lambda *args, **kwargs: None)
    return runpy.run_path(str(ROOT / "config" / "settings.py"))


@pytest.fixture
def production(settings, monkeypatch):
    """The security settings config/settings.py makes with DEBUG=0 (and the given extras)."""

    def apply(**variables: str) -> None:
        namespace = load_config(monkeypatch, DEBUG="0", SECRET_KEY="x", **variables)
        for name in SECURITY_SETTINGS:
            setattr(settings, name, namespace[name])

    apply()
    return apply


@pytest.fixture
def staff(django_user_model):
    """Two staff users who may log in to the admin."""
    return [
        django_user_model.objects.create_user(name, password=PASSWORD, is_staff=True)
        for name in ("ada", "grace")
    ]


def login(username: str, password: str, ip: str = "198.51.100.1", **headers: str):
    """One POST of the admin login form from a fresh browser at `ip`."""
    return Client(REMOTE_ADDR=ip).post(
        LOGIN_URL, {"username": username, "password": password, "next": "/admin/"}, **headers
    )


def refused(response) -> bool:
    """The login page answered 429 with Retry-After and said why."""
    return (
        response.status_code == 429
        and int(response["Retry-After"]) > 0
        and "Too many failed logins" in response.content.decode()
    )


# --- The login limit ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_five_failures_block_the_username_even_with_the_right_password(staff):
    """After 5 wrong passwords for ada (from several addresses), the 6th try is refused with 429
    and Retry-After, even with her right password, and she is not logged in; grace is not."""
    for attempt in range(5):
        response = login("ada", "wrong", ip=f"198.51.100.{attempt}")
        assert response.status_code == 200
        assert "Please enter the correct username and password" in response.content.decode()

    blocked = login("ada", PASSWORD, ip="203.0.113.50")

    assert refused(blocked)
    assert 0 < int(blocked["Retry-After"]) <= 900
    assert "_auth_user_id" not in blocked.wsgi_request.session
    assert login("grace", PASSWORD, ip="203.0.113.50").status_code == 302


@pytest.mark.django_db
def test_five_failures_from_one_address_block_it_for_every_username(staff):
    """One address guessing five usernames is refused for a sixth, existing or not."""
    for name in ("a", "b", "c", "d", "e"):
        assert login(name, "wrong", ip="192.0.2.9").status_code == 200

    assert refused(login("grace", PASSWORD, ip="192.0.2.9"))
    assert login("grace", PASSWORD, ip="192.0.2.10").status_code == 302


@pytest.mark.django_db
def test_a_successful_login_clears_the_username_failures(staff):
    """4 failures, a success, then 4 more failures: ada is never blocked (her count restarted)."""
    for attempt in range(4):
        login("ada", "wrong", ip=f"198.51.100.{attempt}")
    assert login("ada", PASSWORD, ip="198.51.100.20").status_code == 302
    for attempt in range(4):
        assert login("ada", "wrong", ip=f"198.51.100.{30 + attempt}").status_code == 200

    assert login("ada", PASSWORD, ip="198.51.100.40").status_code == 302


@pytest.mark.django_db
def test_the_block_ends_with_the_window(staff, settings):
    """MAILQUEUE_ADMIN_LOGIN_FAILURES and _WINDOW_SECONDS are read per request; once the window
    has passed the user may log in again."""
    settings.MAILQUEUE_ADMIN_LOGIN_FAILURES = 2
    settings.MAILQUEUE_ADMIN_LOGIN_WINDOW_SECONDS = 1
    login("ada", "wrong", ip="198.51.100.1")
    login("ada", "wrong", ip="198.51.100.2")
    blocked = login("ada", PASSWORD, ip="198.51.100.3")
    assert refused(blocked) and blocked["Retry-After"] == "1"

    time.sleep(1.2)

    assert login("ada", PASSWORD, ip="198.51.100.3").status_code == 302


@pytest.mark.django_db
def test_the_counts_live_in_redis_for_every_web_process(staff):
    """The counters are Redis keys with the window as their lifetime (shared by every web
    process); the username is stored hashed, never as typed."""
    login("ada", "wrong", ip="198.51.100.7")

    keys = sorted(key.decode() for key in redis_connection().keys("mailqueue:admin-login:*"))
    assert len(keys) == 2 and keys[0] == "mailqueue:admin-login:ip:198.51.100.7"
    assert keys[1].startswith("mailqueue:admin-login:user:") and "ada" not in keys[1]
    assert all(0 < redis_connection().ttl(key) <= 900 for key in keys)


@pytest.mark.django_db
def test_x_forwarded_for_counts_only_behind_trusted_proxies(staff, settings):
    """Without MAILQUEUE_TRUSTED_PROXIES a client cannot dodge the IP limit with a made-up
    X-Forwarded-For; with one trusted proxy, the address it appended is the client's."""
    for index in range(5):
        login(f"x{index}", "wrong", ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"203.0.113.{index}")
    assert refused(login("grace", PASSWORD, ip="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.99"))

    redis_connection().flushdb()
    settings.MAILQUEUE_TRUSTED_PROXIES = 1
    for index in range(5):
        # The proxy (10.0.0.2) appended the real client; the first entry is the client's lie.
        login(f"y{index}", "wrong", ip="10.0.0.2", HTTP_X_FORWARDED_FOR=f"1.1.1.{index}, 5.5.5.5")
    assert refused(login("grace", PASSWORD, ip="10.0.0.2", HTTP_X_FORWARDED_FOR="9.9.9.9, 5.5.5.5"))
    other_client = login("grace", PASSWORD, ip="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert other_client.status_code == 302


@pytest.mark.django_db
def test_with_redis_down_the_login_still_works_and_warns(staff, settings, caplog):
    """Redis unreachable: no 500, a wrong password is still refused, the right one logs in, and
    a warning says the limit was not enforced."""
    settings.RQ_QUEUES = {
        **settings.RQ_QUEUES,
        "default": {**settings.RQ_QUEUES["default"], "URL": "redis://127.0.0.1:1/0"},
    }
    caplog.set_level("WARNING", logger="mailqueue.security")

    for _ in range(6):
        assert login("ada", "wrong").status_code == 200
    assert login("ada", PASSWORD).status_code == 302

    warnings = [r.getMessage() for r in caplog.records if r.name == "mailqueue.security"]
    assert warnings and all("Redis is unavailable" in message for message in warnings)


# --- Cookies and headers -----------------------------------------------------------------------


def test_outside_debug_cookies_are_secure_and_hsts_is_set(monkeypatch):
    """DEBUG=0: secure session and CSRF cookies, a year of HSTS with subdomains and preload;
    DEBUG=1 sets none of them."""
    production = load_config(monkeypatch, DEBUG="0", SECRET_KEY="x")
    assert production["SESSION_COOKIE_SECURE"] and production["CSRF_COOKIE_SECURE"]
    assert production["SECURE_HSTS_SECONDS"] == 31536000
    assert production["SECURE_HSTS_INCLUDE_SUBDOMAINS"] and production["SECURE_HSTS_PRELOAD"]
    assert production["SECURE_SSL_REDIRECT"] is False

    development = load_config(monkeypatch, DEBUG="1")
    assert not any(name in development for name in SECURITY_SETTINGS)


@pytest.mark.django_db
def test_the_session_and_csrf_cookies_carry_secure(production, staff):
    """Logging in over HTTPS (the proxy's X-Forwarded-Proto) sets Secure, HttpOnly cookies."""
    client = Client(REMOTE_ADDR="198.51.100.1")
    page = client.get(LOGIN_URL, HTTP_X_FORWARDED_PROTO="https")
    assert page.cookies["csrftoken"]["secure"]

    response = client.post(
        LOGIN_URL,
        {"username": "ada", "password": PASSWORD},
        HTTP_X_FORWARDED_PROTO="https",
    )

    assert response.status_code == 302
    assert response.cookies["sessionid"]["secure"] and response.cookies["sessionid"]["httponly"]


@pytest.mark.django_db
def test_hsts_only_on_https_answers(production, client):
    """Strict-Transport-Security comes with HTTPS answers, never over plain HTTP."""
    secure = client.get(LOGIN_URL, HTTP_X_FORWARDED_PROTO="https")
    plain = client.get(LOGIN_URL)

    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert "Strict-Transport-Security" not in plain


@pytest.mark.django_db
def test_ssl_redirect_spares_the_probes_and_metrics(production, client):
    """SECURE_SSL_REDIRECT=1 sends browsers to https://, but the probes and Prometheus, which
    call the pods over plain HTTP, still get their answers."""
    production(SECURE_SSL_REDIRECT="1")

    redirect = client.get(LOGIN_URL)
    assert redirect.status_code == 301
    assert redirect["Location"] == "https://testserver/admin/login/"
    assert client.get(LOGIN_URL, HTTP_X_FORWARDED_PROTO="https").status_code == 200
    assert client.get("/health/live/").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_admin_pages_carry_a_strict_content_security_policy(admin_client, client):
    """Every admin page: scripts only from our own origin, no framing, no plugins, plus
    nosniff, DENY and a same-origin Referrer-Policy."""
    for url in (LOGIN_URL, "/admin/", "/admin/templates_app/emailtemplate/add/"):
        response = (client if url == LOGIN_URL else admin_client).get(url)
        assert response.status_code == 200, url
        policy = dict(
            part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
        )
        assert policy["script-src"] == "'self'"
        assert policy["default-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["object-src"] == "'none'"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_public_token_pages_send_no_referrer_and_a_policy(client, api):
    """Unsubscribe, topic confirmation and tracking links carry a token in their path: they
    answer with Referrer-Policy: no-referrer, a policy and nosniff; JSON answers get the
    load-nothing policy."""
    for url in ("/u/not-a-token/", "/topics/confirm/not-a-token/", "/t/c/not-a-token/"):
        response = client.get(url)
        assert response.status_code < 500, url
        assert response["Referrer-Policy"] == "no-referrer", url
        assert response["X-Content-Type-Options"] == "nosniff", url
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"], url

    unsubscribe = client.get("/u/not-a-token/")
    assert unsubscribe["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in unsubscribe["Content-Security-Policy"]
    emails = api.get("/api/v1/emails/")
    assert emails.status_code == 200
    assert emails["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
