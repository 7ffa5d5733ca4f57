"""The schema of the two SQL stores, written once.

Each table is one template; a dialect fills in its types (``SQLITE``, ``POSTGRES``):
``{key}`` a text column compared byte by byte (PostgreSQL's ``COLLATE "C"``), ``{real}``
a float, ``{int}`` a 64-bit integer, ``{json}`` a JSON document (text in SQLite, JSONB in
PostgreSQL), ``{options}`` the table options (SQLite's ``WITHOUT ROWID``).

The steps below are the migrations both stores share; each store's ``MIGRATIONS``
lists them in its own released order, with the steps that are its own (SQLite's
per-minute rate counts, PostgreSQL's server-side functions). A released step is never
edited: the text here renders exactly as each store ran it before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .records import SERVICE_FLAG_FOREVER, SERVICE_FLAG_PREFIX, SIGN_OUT_FLAG_PREFIX

SQLITE: Mapping[str, str] = {
    "{key}": "TEXT",
    "{real}": "REAL",
    "{int}": "INTEGER",
    "{json}": "TEXT",
    "{options}": " WITHOUT ROWID",
}
POSTGRES: Mapping[str, str] = {
    "{key}": 'TEXT COLLATE "C"',
    "{real}": "DOUBLE PRECISION",
    "{int}": "BIGINT",
    "{json}": "JSONB",
    "{options}": "",
}


def render(steps: Sequence[Sequence[str]], types: Mapping[str, str]) -> tuple[tuple[str, ...], ...]:
    """The steps with the dialect's types filled in. (A plain replace, not
    ``str.format``: PostgreSQL's function bodies hold braces of their own.)"""
    out = []
    for step in steps:
        statements = []
        for statement in step:
            for token, value in types.items():
                statement = statement.replace(token, value)
            statements.append(statement)
        out.append(tuple(statements))
    return tuple(out)


VERIFICATIONS = """CREATE TABLE verifications (
    id {key} PRIMARY KEY,
    to_number {key} NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    key_id TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    expires_at {real} NOT NULL,
    resend_available_at {real} NOT NULL,
    attempts INTEGER NOT NULL,
    sends INTEGER NOT NULL,
    client_ip TEXT,
    country TEXT,
    locale TEXT,
    code_length INTEGER NOT NULL DEFAULT 6,
    service_name TEXT
)"""
FLAGS = "CREATE TABLE flags (key {key} PRIMARY KEY, value TEXT NOT NULL, until {real} NOT NULL)"
EVENTS = """CREATE TABLE events (
    id {key} PRIMARY KEY,
    type TEXT NOT NULL,
    ts {real} NOT NULL,
    verification_id TEXT,
    number_masked TEXT,
    number_hash TEXT,
    country TEXT,
    channel TEXT,
    client_ip TEXT,
    reason TEXT,
    rule TEXT,
    provider_code INTEGER,
    details {json} NOT NULL
)"""
ALERTS = """CREATE TABLE alerts (
    id {key} PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    resolved_at {real},
    message TEXT NOT NULL,
    details {json} NOT NULL
)"""
API_KEYS = """CREATE TABLE api_keys (
    id {key} PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    scopes {json} NOT NULL,
    created_at {real} NOT NULL,
    revoked_at {real}
)"""

#: The tables of the first release, in the order both stores created them. PostgreSQL's
#: first step adds an index on ``flags (until)`` after ``FLAGS`` and its first function.
RATE_LOG = (
    "CREATE TABLE rate_log (key {key} NOT NULL, ts {real} NOT NULL)",
    "CREATE INDEX rate_log_key_ts ON rate_log (key, ts)",
    "CREATE INDEX rate_log_ts ON rate_log (ts)",
)
VERIFICATION_INDEXES = (
    "CREATE INDEX verifications_to_status ON verifications (to_number, status, created_at)",
    "CREATE INDEX verifications_expires_at ON verifications (expires_at)",
)
EVENT_INDEXES = tuple(
    f"CREATE INDEX events_{c} ON events ({c})"
    for c in ("type", "number_hash", "client_ip", "country", "ts")
)
ALERT_INDEXES = ("CREATE INDEX alerts_updated_at ON alerts (updated_at)",)


def first_step(after_flags: Sequence[str] = (), last: Sequence[str] = ()) -> tuple[str, ...]:
    """The first release's tables, with a dialect's own statements after ``flags``
    and at the end."""
    return (
        VERIFICATIONS, *VERIFICATION_INDEXES, *RATE_LOG, FLAGS, *after_flags, EVENTS,
        *EVENT_INDEXES, ALERTS, *ALERT_INDEXES, API_KEYS, *last,
    )  # fmt: skip


#: Admission buckets (admission.py) and the API key that started a verification.
BUCKETS = (
    """CREATE TABLE buckets (
    key {key} PRIMARY KEY,
    level {real} NOT NULL,
    earned {real} NOT NULL,
    t {real} NOT NULL,
    forget_at {real} NOT NULL
)""",
    "CREATE INDEX buckets_forget_at ON buckets (forget_at)",
    "ALTER TABLE verifications ADD COLUMN owner TEXT",
)

#: Repeated refusals counted per minute and kind (refusals.py), not stored.
REFUSALS = (
    """CREATE TABLE refusal_tallies (
    minute {int} NOT NULL,
    key {key} NOT NULL,
    count {int} NOT NULL,
    last_ts {real} NOT NULL,
    example {json} NOT NULL,
    PRIMARY KEY (minute, key)
)""",
    # Per-verification storage (docs/deploying-at-scale.md, "Sizing"): a type or a
    # country matches a large share of all events, so these indexes were never the
    # cheaper path (event lists walk the id order, the stats a ts range) and cost
    # about a tenth of every event's bytes.
    "DROP INDEX events_type",
    "DROP INDEX events_country",
)

#: "purpose": what a code is for (purpose.py), kept for resends and answers. NULL in
#: older rows reads as a login code, as their tags are.
PURPOSE = tuple(
    f"ALTER TABLE verifications ADD COLUMN {c} TEXT"
    for c in ("purpose", "amount", "currency", "payee")
)

#: The scope a shell started a verification under (the /v2 service SID), NULL for the
#: rows of before it and those started without one.
SERVICE = ("ALTER TABLE verifications ADD COLUMN service TEXT",)

#: Webhooks: the outbox and delivery log (webhooks_sql.py).
WEBHOOKS = (
    """CREATE TABLE webhook_endpoints (
    id {key} PRIMARY KEY,
    scope {key} NOT NULL UNIQUE,
    url TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at {real} NOT NULL
)""",
    """CREATE TABLE webhook_deliveries (
    id {key} PRIMARY KEY,
    endpoint_id {key} NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at {real} NOT NULL,
    next_at {real} NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    lease TEXT NOT NULL,
    log TEXT NOT NULL
)""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at)",
    "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status)",
    "CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at)",
)

#: Events counted per minute and kind (counters.py), what stats and alerts read. The
#: family leads the key: a reader asks for a few families over a range of minutes, one
#: range scan each, and the purge deletes each family's old minutes the same way.
#: (SQLite's WITHOUT ROWID: the rows live in the key's b-tree, not also in a second one.)
COUNTS = (
    """CREATE TABLE event_counts (
    family {key} NOT NULL,
    minute {int} NOT NULL,
    kind {key} NOT NULL,
    count {int} NOT NULL,
    PRIMARY KEY (family, minute, kind)
){options}""",
)


def services(field: Callable[[str], str]) -> tuple[str, ...]:
    """The shells' service records (``Store.put_service``: the /v2 services), and the
    live services earlier releases kept as flags copied into them, nothing lost on
    the upgrade (the flags stay, for an instance of before during a rolling upgrade).
    ``field(name)``: the dialect's text of the JSON field ``name`` of a flag's value."""
    n = len(SERVICE_FLAG_PREFIX)
    return (
        """CREATE TABLE services (
    id {key} PRIMARY KEY,
    account {key} NOT NULL,
    document TEXT NOT NULL,
    created_at {real} NOT NULL,
    seq {int} NOT NULL
)""",
        "CREATE INDEX services_account ON services (account, seq)",
        "INSERT INTO services (id, account, document, created_at, seq) "  # noqa: S608 - constants
        "SELECT id, account, value, created_at, "
        "ROW_NUMBER() OVER (PARTITION BY account ORDER BY created_at, id) FROM ("
        f"SELECT substr(key, {n + 1}) AS id, {field('account_sid')} AS account, value, "
        f"CAST({field('created_at')} AS {{real}}) AS created_at FROM flags "
        f"WHERE substr(key, 1, {n}) = '{SERVICE_FLAG_PREFIX}' "
        f"AND until >= {SERVICE_FLAG_FOREVER!r}) AS kept",
    )


_N = len(SIGN_OUT_FLAG_PREFIX)
#: The dashboard's sign-outs (``Store.sign_out``), and those earlier releases kept as
#: flags copied into them (each lives at most a session's lifetime).
SIGNED_OUT = (
    "CREATE TABLE signed_out (id {key} PRIMARY KEY, until {real} NOT NULL)",
    "CREATE INDEX signed_out_until ON signed_out (until)",
    "INSERT INTO signed_out (id, until) "  # noqa: S608 - constants
    f"SELECT substr(key, {_N + 1}), until FROM flags "
    f"WHERE substr(key, 1, {_N}) = '{SIGN_OUT_FLAG_PREFIX}'",
)
