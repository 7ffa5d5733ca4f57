"""Redis store URLs: ``redis://``, ``rediss://`` and ``redis+cluster://``.

``parse_url`` splits a store URL into otpguard's own query parameters (``prefix``,
``max_events``, ``event_ttl_days``, ``max_connections``, ``pool_timeout``) and what
goes to redis-py, and refuses, as a ConfigError at start-up, what redis-py would only
fail on later (an unknown option, a bad number, a Cluster database other than 0).
``docs/redis.md`` documents them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio import connection as rc

from ..errors import ConfigError

DEFAULT_MAX_EVENTS = 200_000
DEFAULT_EVENT_TTL_DAYS = 31
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_POOL_TIMEOUT = 2.0
OUR_PARAMS = ("prefix", "max_events", "event_ttl_days", "max_connections", "pool_timeout")


@dataclass(frozen=True)
class Options:
    cluster: bool
    client_url: str  # standalone: the URL for redis-py, our parameters removed
    nodes: tuple[tuple[str, int], ...]  # cluster: startup nodes
    client_kwargs: tuple[tuple[str, str], ...]  # cluster: query parameters for redis-py
    username: str | None
    password: str | None
    prefix: str
    max_events: int
    event_ttl_days: int
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # pool size (per node in Cluster)
    pool_timeout: float = DEFAULT_POOL_TIMEOUT  # wait for a free pooled connection


def parse_url(url: str) -> Options:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "redis+cluster"):
        raise ConfigError(f"OTPGUARD_STORE: not a redis URL (scheme {scheme!r})")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in OUR_PARAMS}
    rest = [(k, v) for k, v in query if k not in OUR_PARAMS]
    prefix = ours.get("prefix", "og")
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigError("OTPGUARD_STORE: the redis 'prefix' must be non-empty, without braces")
    try:
        max_events = int(ours.get("max_events", DEFAULT_MAX_EVENTS))
        event_ttl_days = int(ours.get("event_ttl_days", DEFAULT_EVENT_TTL_DAYS))
    except ValueError as exc:
        raise ConfigError("OTPGUARD_STORE: max_events and event_ttl_days are integers") from exc
    if max_events < 1 or event_ttl_days < 1:
        raise ConfigError("OTPGUARD_STORE: max_events and event_ttl_days must be positive")
    pool = _pool_options(ours, cluster=scheme == "redis+cluster")
    if scheme != "redis+cluster":
        client_url = urlunsplit(parts._replace(query=urlencode(rest)))
        _check_client_options(client_url, [k for k, _ in rest])
        return Options(
            False, client_url, (), (), None, None, prefix, max_events, event_ttl_days, *pool
        )
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)|([^:\[\]]+)", item.strip())
        if m is None:
            raise ConfigError(
                "OTPGUARD_STORE: use redis+cluster://host:port[,host:port...] ([v6]:port for IPv6)"
            )
        host = m.group(1) or m.group(3) or m.group(5)
        nodes.append((host, int(m.group(2) or m.group(4) or 6379)))
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError("OTPGUARD_STORE: Redis Cluster has database 0 only")
    return Options(
        True, "", tuple(nodes), tuple(rest), unquote(username) or None,
        unquote(password) or None, prefix, max_events, event_ttl_days, *pool,
    )  # fmt: skip


def _pool_options(ours: dict[str, str], cluster: bool) -> tuple[int, float]:
    """``max_connections`` and ``pool_timeout``: a bounded pool, and a short wait for it."""
    try:
        size = int(ours.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        wait = float(ours.get("pool_timeout", DEFAULT_POOL_TIMEOUT))
    except ValueError as exc:
        raise ConfigError(
            "OTPGUARD_STORE: max_connections is an integer and pool_timeout a number"
        ) from exc
    if size < 1 or not 0 < wait <= 60:  # not 'inf' / 'nan' either
        raise ConfigError(
            "OTPGUARD_STORE: max_connections must be positive, pool_timeout in (0, 60] seconds"
        )
    if cluster and "pool_timeout" in ours:
        # redis-py's cluster client has no blocking pool: past max_connections per node a
        # command fails at once. Refused rather than silently ignored.
        raise ConfigError("OTPGUARD_STORE: pool_timeout applies to one Redis, not redis+cluster")
    return size, wait


def _client_option_names(scheme: str) -> set[str]:
    """The query parameters a ``redis://``/``rediss://`` URL may carry: those redis-py's
    ``from_url`` parses, a few plain strings, and (``rediss``) the TLS connection's
    ``ssl_*`` arguments. redis-py passes any other name on to the connection, which then
    fails every command with a TypeError, so it is refused here instead."""
    names = set(rc.URL_QUERY_ARGUMENT_PARSERS) | {"client_name", "username", "password"}
    if scheme == "rediss":
        names |= {n for n in inspect.signature(rc.SSLConnection).parameters if n[:4] == "ssl_"}
    return names


def _check_client_options(client_url: str, names: Sequence[str]) -> None:
    allowed = _client_option_names(urlsplit(client_url).scheme.lower())
    unknown = sorted({n for n in names if n not in allowed})
    if unknown:
        raise ConfigError(
            f"OTPGUARD_STORE: unknown redis URL option(s) {', '.join(unknown)}; "
            "see docs/redis.md (socket_timeout, socket_connect_timeout, ssl_cert_reqs, ...)"
        )
    try:
        rc.parse_url(client_url)
    except ValueError as exc:  # "Invalid value for 'socket_timeout' in connection URL."
        raise ConfigError(f"OTPGUARD_STORE: {exc}") from None


def cluster_kwargs(query: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The few redis-py options a cluster URL may carry (TLS and timeouts)."""
    out: dict[str, Any] = {}
    for key, value in query:
        if key == "ssl":
            out["ssl"] = value.lower() in ("1", "true", "yes", "on")
        elif key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            out[key] = value
        elif key in ("socket_timeout", "socket_connect_timeout"):
            try:
                out[key] = float(value)
            except ValueError:
                raise ConfigError(f"OTPGUARD_STORE: {key} must be a number of seconds") from None
        else:
            raise ConfigError(f"OTPGUARD_STORE: unsupported redis+cluster option {key!r}")
    return out
