"""The store's tables, per SQL dialect, and the migrations that create them.

The schema belongs to the store: it is created on first use and migrated forward
by the library, never by hand (a store opened with ``migrate=False`` only checks
that it is at :data:`SCHEMA_VERSION`, for migrations run at deploy time).
``MIGRATIONS[dialect][n]`` takes a database from schema version ``n`` to ``n + 1``
(version 0 is an empty database); the version reached is kept in a one-row table.
A database whose version is newer than :data:`SCHEMA_VERSION` was written by a
newer customer-session and is refused, since an older library cannot know what the
newer columns mean.

Tables:

``customer_sessions``
    One row per session: the integration id (primary key), the state and the
    ``updated`` time (indexed for queries: ``updated`` alone, and since version 4
    ``(state, updated)`` instead of ``state`` alone), the row ``version`` that optimistic
    concurrency compares, and the session as its v1 wire document with history.
    On PostgreSQL since version 4, the primary key is the id's SHA-256
    (``integration_id_digest``, also in the journal), as the keys table's is the
    key's (``key_digest``), and the id's text has a hash index: see
    ``_POSTGRES_DIGESTS``.
``customer_session_journal``
    One row per committed change, appended in the same transaction as the change;
    since version 4, with who made it (``actor``, ``NULL`` when nobody was named).
``customer_session_outbox``
    One row per durable effect, written with the change, marked once delivered
    (indexed by delivery time since version 2, for ``purge_delivered``). Its
    sequence numbers never repeat (on SQLite since version 4: ``AUTOINCREMENT``).
    Since version 4, a row given up on is marked discarded, with why
    (``discarded_at``, ``discard_reason``; see there), and the effect's name is
    indexed (``outbox_effects()``; see ``_OUTBOX_EFFECT``).
``customer_session_keys``
    Idempotency keys of changes already applied (a replayed log's lines), indexed
    by the time they were recorded since version 2 (for ``forget_keys``); since
    version 3, with the reason an event was refused (``refusal``, ``NULL`` for a
    change that was applied).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from customer_session.exceptions import UnsupportedSchema

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

SCHEMA_VERSION: Final = 4
"""The schema version this library writes and reads."""

KEYS_TABLE: Final = "customer_session_keys"
"""The table of idempotency keys (a duplicate key is reported by its name)."""

SCHEMA_TABLE: Final = "customer_session_schema"
"""The one-row table that records the schema version."""

TABLES: Final = (
    SCHEMA_TABLE,
    "customer_sessions",
    "customer_session_journal",
    "customer_session_outbox",
    KEYS_TABLE,
)
"""Every table of the store; a database with none of them is empty (version 0)."""

TABLE_LIST: Final = ", ".join(f"'{name}'" for name in TABLES)
"""The tables as an SQL list, for the backends' catalog queries."""

# The outbox's indexes, by name: SQLite's version 4 makes them again (see there).
_OUTBOX_PENDING: Final = """CREATE INDEX customer_session_outbox_pending
    ON customer_session_outbox (sequence) WHERE delivered_at IS NULL"""
_OUTBOX_DELIVERED: Final = """CREATE INDEX customer_session_outbox_delivered
    ON customer_session_outbox (delivered_at) WHERE delivered_at IS NOT NULL"""
_OUTBOX_DISCARDED: Final = """CREATE INDEX customer_session_outbox_discarded
    ON customer_session_outbox (discarded_at, sequence) WHERE discarded_at IS NOT NULL"""
# Version 4 indexes the outbox by effect name, so outbox_effects() finds the few names of
# an outbox of millions of rows by a walk that jumps from one name to the next (a loose
# index scan) instead of reading every row. The names themselves: at most 200 characters
# (EFFECT_NAME_MAX_LENGTH), so an entry fits a PostgreSQL btree's 2,704 bytes.
_OUTBOX_EFFECT: Final = """CREATE INDEX customer_session_outbox_effect
    ON customer_session_outbox (effect)"""


def _sqlite_outbox(name: str, sequence: str, more: str = "") -> str:
    """The SQLite outbox table ``name`` whose ``sequence`` column is declared ``sequence``.

    ``more`` declares the columns of later versions, after the others.
    """
    return f"""CREATE TABLE {name} (
        sequence {sequence},
        idempotency_key TEXT NOT NULL UNIQUE,
        effect TEXT NOT NULL,
        integration_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        position INTEGER NOT NULL,
        record TEXT NOT NULL,
        document TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        delivered_at TEXT{more})"""


_SQLITE_V1: Final = (
    """CREATE TABLE customer_session_schema (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL)""",
    """CREATE TABLE customer_sessions (
        integration_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated TEXT NOT NULL,
        document TEXT NOT NULL)""",
    "CREATE INDEX customer_sessions_state ON customer_sessions (state)",
    "CREATE INDEX customer_sessions_updated ON customer_sessions (updated)",
    """CREATE TABLE customer_session_journal (
        sequence INTEGER PRIMARY KEY,
        integration_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        operation TEXT NOT NULL,
        event_key TEXT,
        records TEXT NOT NULL,
        changes TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        UNIQUE (integration_id, version))""",
    _sqlite_outbox("customer_session_outbox", "INTEGER PRIMARY KEY"),
    _OUTBOX_PENDING,
    """CREATE TABLE customer_session_keys (
        key TEXT PRIMARY KEY,
        integration_id TEXT,
        recorded_at TEXT NOT NULL)""",
)

# text, not jsonb, for documents: the store never looks inside, and jsonb costs a
# parse per write (``document::jsonb`` still works in queries).
_POSTGRES_V1: Final = (
    """CREATE TABLE customer_session_schema (
        id integer PRIMARY KEY CHECK (id = 1),
        version integer NOT NULL)""",
    """CREATE TABLE customer_sessions (
        integration_id text PRIMARY KEY,
        state text NOT NULL,
        version bigint NOT NULL,
        updated timestamptz NOT NULL,
        document text NOT NULL)""",
    "CREATE INDEX customer_sessions_state ON customer_sessions (state)",
    "CREATE INDEX customer_sessions_updated ON customer_sessions (updated)",
    """CREATE TABLE customer_session_journal (
        sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        integration_id text NOT NULL,
        version bigint NOT NULL,
        kind text NOT NULL,
        operation text NOT NULL,
        event_key text,
        records text NOT NULL,
        changes text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (integration_id, version))""",
    """CREATE TABLE customer_session_outbox (
        sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        idempotency_key text NOT NULL UNIQUE,
        effect text NOT NULL,
        integration_id text NOT NULL,
        version bigint NOT NULL,
        position integer NOT NULL,
        record text NOT NULL,
        document text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        attempts integer NOT NULL DEFAULT 0,
        last_error text,
        delivered_at timestamptz)""",
    _OUTBOX_PENDING,
    """CREATE TABLE customer_session_keys (
        key text PRIMARY KEY,
        integration_id text,
        recorded_at timestamptz NOT NULL DEFAULT now())""",
)

# Version 2: indexes for the housekeeping deletes (purge_delivered, forget_keys), so
# they find old rows without reading the whole outbox or every key. Partial on the
# outbox: pending rows (delivered_at NULL) are never purged. Same text in both dialects.
_V2: Final = (
    _OUTBOX_DELIVERED,
    "CREATE INDEX customer_session_keys_recorded ON customer_session_keys (recorded_at)",
)

# Version 3: a refused event's key keeps why it was refused, so a later replay of the
# log reports the line as refused again rather than as applied. Same text in both dialects.
_V3: Final = ("ALTER TABLE customer_session_keys ADD COLUMN refusal text",)

# Version 4: a journal entry names who made the change (the audit trail of a store many
# workers share). Nullable: entries written before, and changes nobody was named for,
# have none. And ids() of a state, least recently updated first (a sweep of idle carts),
# reads the sessions of that state only: by state alone, or by updated alone, it read
# every older session of the other states too (a million finished orders for ten open
# carts) or sorted every session of the state. (state, updated) serves both, and
# counts() and lookups by state, so it replaces the state index. Same text in both dialects.
_V4: Final = (
    "ALTER TABLE customer_session_journal ADD COLUMN actor text",
    "DROP INDEX customer_sessions_state",
    "CREATE INDEX customer_sessions_state_updated ON customer_sessions (state, updated)",
)

# On PostgreSQL, version 4 also keys rows by a digest of their integration id or key.
# A btree index entry holds at most 2,704 bytes (after compression): an id of 1,000
# characters (the model's limit) is up to 4,000 bytes in UTF-8, and keys have no
# limit, so an index on the text refused ids and keys SQLite stores. Each table that
# indexed the text has the SHA-256 of its UTF-8 bytes instead (32 bytes whatever the
# length): the primary key of the sessions and of the keys, the journal's unique key
# with the version. The statements compute the digest of the id or key they are given
# (``_postgres._digest``), so uniqueness, ON CONFLICT and every lookup use these
# indexes; rows written before get theirs here. Computed by each statement rather
# than by the database per row (a generated column, an expression index): those need
# an IMMUTABLE function, which convert_to() is not, and a wrapper declared so, called
# per row, with hash indexes of the text for lookups, cost 10 to 20% of the commit rate;
# the one hash index kept (the id's text, for queries by hand) costs about 2%.
_POSTGRES_DIGESTS: Final = (
    "ALTER TABLE customer_sessions ADD COLUMN integration_id_digest bytea",
    """UPDATE customer_sessions
        SET integration_id_digest = sha256(convert_to(integration_id, 'UTF8'))""",
    """ALTER TABLE customer_sessions
        ALTER COLUMN integration_id_digest SET NOT NULL,
        DROP CONSTRAINT customer_sessions_pkey,
        ADD CONSTRAINT customer_sessions_pkey PRIMARY KEY (integration_id_digest)""",
    # The id itself stays indexed, for queries written by hand (WHERE integration_id =
    # '...'): a hash index holds the text's 32-bit hash, so an id of any length fits.
    """CREATE INDEX customer_sessions_integration_id
        ON customer_sessions USING hash (integration_id)""",
    "ALTER TABLE customer_session_journal ADD COLUMN integration_id_digest bytea",
    """UPDATE customer_session_journal
        SET integration_id_digest = sha256(convert_to(integration_id, 'UTF8'))""",
    """ALTER TABLE customer_session_journal
        ALTER COLUMN integration_id_digest SET NOT NULL,
        DROP CONSTRAINT customer_session_journal_integration_id_version_key,
        ADD CONSTRAINT customer_session_journal_version UNIQUE (integration_id_digest, version)""",
    "ALTER TABLE customer_session_keys ADD COLUMN key_digest bytea",
    "UPDATE customer_session_keys SET key_digest = sha256(convert_to(key, 'UTF8'))",
    """ALTER TABLE customer_session_keys
        ALTER COLUMN key_digest SET NOT NULL,
        DROP CONSTRAINT customer_session_keys_pkey,
        ADD CONSTRAINT customer_session_keys_pkey PRIMARY KEY (key_digest)""",
)

# Version 4 also lets an outbox row be given up on (discard(), or deliver()'s
# max_attempts): discarded_at and discard_reason, NULL for every other row. A discard
# also sets delivered_at to the same time, so that delivered_at says when the row left
# the pending ones, delivered or not: the pending index, the pending query and
# purge_delivered (and its index) stay as they are, and one "delivered_at IS NULL"
# compare-and-set decides between a discard and a delivery that finish together. The
# partial index lists the discarded rows (discarded()) without reading the outbox.
_POSTGRES_V4: Final = (
    *_V4,
    """ALTER TABLE customer_session_outbox
        ADD COLUMN discarded_at timestamptz, ADD COLUMN discard_reason text""",
    _OUTBOX_DISCARDED,
    _OUTBOX_EFFECT,
    *_POSTGRES_DIGESTS,
)

# On SQLite, version 4 also makes outbox sequences never come back: an INTEGER PRIMARY
# KEY gives the largest rowid plus one, so purging the last delivered row handed its
# number to the next row, where PostgreSQL's identity never repeats one. Only
# AUTOINCREMENT prevents that, and SQLite cannot add it to a table: the outbox is
# copied into a new one (its indexes go with the old table and are made again).
_OUTBOX_COLUMNS: Final = (
    "sequence, idempotency_key, effect, integration_id, version, position, record,"
    " document, created_at, attempts, last_error, delivered_at"
)
_SQLITE_V4: Final = (
    *_V4,
    _sqlite_outbox(
        "customer_session_outbox_v4",
        "INTEGER PRIMARY KEY AUTOINCREMENT",
        ",\n        discarded_at TEXT,\n        discard_reason TEXT",
    ),
    f"""INSERT INTO customer_session_outbox_v4 ({_OUTBOX_COLUMNS})
        SELECT {_OUTBOX_COLUMNS} FROM customer_session_outbox""",  # noqa: S608 - our own names
    "DROP TABLE customer_session_outbox",
    "ALTER TABLE customer_session_outbox_v4 RENAME TO customer_session_outbox",
    _OUTBOX_PENDING,
    _OUTBOX_DELIVERED,
    _OUTBOX_DISCARDED,
    _OUTBOX_EFFECT,
)

MIGRATIONS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "sqlite": (_SQLITE_V1, _V2, _V3, _SQLITE_V4),
    "postgres": (_POSTGRES_V1, _V2, _V3, _POSTGRES_V4),
}
"""Per dialect, the statements of each migration step, oldest first."""

if any(len(steps) != SCHEMA_VERSION for steps in MIGRATIONS.values()):  # pragma: no cover
    raise AssertionError("every dialect needs one migration step per schema version")


def found_version(tables: Iterable[object], read: Callable[[], object]) -> object:
    """The version a database records, from the store's tables it has (see :data:`TABLES`).

    Args:
        tables: The names of the store's tables that exist.
        read: Reads the version row (``None`` when there is none).

    Returns:
        0 when there is no table yet; ``None`` when tables exist but no version
        does (which :func:`steps_from` refuses: creating them again would fail).
    """
    names = set(tables)
    if SCHEMA_TABLE in names:
        return read()
    return None if names else 0


def steps_from(
    dialect: str, found: object, integration_id: str | None, database: str
) -> tuple[tuple[str, ...], ...]:
    """The migration steps that take a database at version ``found`` to the current one.

    Args:
        dialect: ``"sqlite"`` or ``"postgres"``.
        found: The version the database records (0 for an empty database).
        integration_id: The session the caller was about to use, for the message.
        database: The database, as messages name it (without a password).

    Raises:
        UnsupportedSchema: ``found`` is newer than this library, or no version
            at all (``None``: tables without a recorded version).
    """
    if not isinstance(found, int) or not 0 <= found <= SCHEMA_VERSION:
        raise UnsupportedSchema(found, SCHEMA_VERSION, integration_id, database=database)
    return MIGRATIONS[dialect][found:]
