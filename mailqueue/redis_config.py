"""How every Mailqueue process reaches Redis: one URL, optionally through Redis Sentinel.

`config/settings.py` turns REDIS_URL (redis:// or rediss://, with a password or an ACL user and
TLS options in the query string) and, when set, REDIS_SENTINELS / REDIS_SENTINEL_SERVICE /
REDIS_SENTINEL_PASSWORD into one connection entry (`rq_connection_config`), copied into every
RQ_QUEUES entry. django-rq builds the workers', the scheduler's and its admin pages' clients
from that entry; `redis_client` builds every other client from the same entry
(`mailqueue.scheduling.connection`: enqueueing, metrics, circuit breakers, rate limits, health,
streams, throttles). So Sentinel, TLS and passwords reach every Redis user through one
configuration, and nothing else in the code base parses a Redis URL.
"""

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured
from redis import Redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel

DEFAULT_SENTINEL_SERVICE = "mymaster"
# Every client fails fast when Redis does not accept the connection, instead of waiting for the
# operating system's TCP timeout (minutes): callers fall back to PostgreSQL and the sweeper.
CONNECT_TIMEOUT_SECONDS = 5
HEALTH_CHECK_INTERVAL_SECONDS = 30
# A sentinel that does not answer is skipped for the next one: discovery must not stall on it.
SENTINEL_TIMEOUT_SECONDS = 2


class RedisConfigError(ImproperlyConfigured, ValueError):
    """REDIS_URL or a REDIS_SENTINEL* variable cannot be used."""


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***` (the user name stays: it helps debugging)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (IPv6 as `[::1]:26379`) as (host, port) pairs."""
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise RedisConfigError(
                f"REDIS_SENTINELS: {item!r} is not host:port (e.g. 10.0.0.5:26379,10.0.0.6:26379)."
            )
        addresses.append((host, int(port)))
    return addresses


def _url_options(url: str) -> dict[str, Any]:
    """The connection options REDIS_URL gives besides its host and port: DB number, user,
    password and TLS options (`ssl=True` for rediss://, query options such as ssl_ca_certs)."""
    try:
        options = parse_url(url)
    except ValueError as exc:
        raise RedisConfigError(f"REDIS_URL = {redact_url(url)!r}: {exc}") from None
    connection_class = options.pop("connection_class", None)
    if connection_class is not None and connection_class is not SSLConnection:
        raise RedisConfigError("REDIS_URL must be redis:// or rediss:// when Sentinel is used.")
    options.pop("host", None)
    options.pop("port", None)
    if connection_class is SSLConnection:
        options["ssl"] = True
    return options


def rq_connection_config(
    url: str,
    *,
    sentinels: list[tuple[str, int]] | None = None,
    service: str = DEFAULT_SENTINEL_SERVICE,
    sentinel_password: str = "",
) -> dict[str, Any]:
    """The connection keys of an RQ_QUEUES entry, as django-rq reads them.

    Without sentinels, REDIS_URL itself. With sentinels, the master of `service` they name,
    reached with REDIS_URL's DB number, user, password and TLS options (its host and port are
    not used); the sentinels are reached with `sentinel_password` and, when REDIS_URL is
    rediss://, with the same TLS options.
    """
    base = {
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
    }
    if not sentinels:
        # django-rq ignores CONNECTION_KWARGS next to a URL; redis_client applies them.
        return {"URL": url, "CONNECTION_KWARGS": base}
    if not service:
        raise RedisConfigError("REDIS_SENTINEL_SERVICE is empty: name the master's service.")
    options = _url_options(url)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    if options.get("ssl"):
        sentinel_kwargs.update({k: v for k, v in options.items() if k.startswith("ssl")})
    return {
        "SENTINELS": sentinels,
        "MASTER_NAME": service,
        "CONNECTION_KWARGS": {**base, **options},
        "SENTINEL_KWARGS": sentinel_kwargs,
    }


def redis_client(
    config: dict[str, Any], *, socket_timeout: float | None, socket_connect_timeout: float | None
) -> Redis:
    """A new client for an RQ_QUEUES entry, with these timeouts: REDIS_URL's server, or the
    current master of the Sentinel service (found again after a failover)."""
    kwargs = {
        **config.get("CONNECTION_KWARGS", {}),
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
    }
    # A URL wins over sentinels, as in django-rq (tests point RQ_QUEUES at their own DB by URL).
    if "URL" in config:
        # from_url lets the URL's own query options (ssl_ca_certs, ...) win over these.
        return Redis.from_url(config["URL"], **kwargs)
    if "SENTINELS" in config:
        sentinel = Sentinel(
            config["SENTINELS"], sentinel_kwargs=config.get("SENTINEL_KWARGS", {}), **kwargs
        )
        return sentinel.master_for(config["MASTER_NAME"])
    raise RedisConfigError("RQ_QUEUES['default'] names neither a URL nor SENTINELS.")


def redis_target(config: dict[str, Any]) -> str:
    """Where an RQ_QUEUES entry points, for logs and keys: the URL without its password, or
    `sentinel://host:port,.../service`."""
    if "URL" in config:
        return redact_url(config["URL"])
    hosts = ",".join(f"{host}:{port}" for host, port in config.get("SENTINELS", []))
    return f"sentinel://{hosts}/{config.get('MASTER_NAME', '')}"
