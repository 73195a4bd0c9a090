"""``open_store``: the backend a path or URL names."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

from customer_session._show import shown
from customer_session.exceptions import ValidationError
from customer_session.model import CustomerSession
from customer_session.store._base import DEFAULT_RETRIES
from customer_session.store._postgres import PostgresStore, conninfo_problems
from customer_session.store._sqlite import SQLiteStore

if TYPE_CHECKING:
    from customer_session.hooks import Workflow
    from customer_session.store._protocol import SessionStore

_S = TypeVar("_S", bound=CustomerSession)

POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
"""URL prefixes that name a PostgreSQL server; anything else but another URL is an SQLite file."""

# ``scheme://``, the scheme two characters or more: ``C:/x.db`` stays a Windows path.
# ``file:`` (``file:///x.db`` too) is SQLite's own URI form, which SQLiteStore opens.
# Leading white space too: a value read from a file or a variable may keep some, and
# the URL is no file name for it.
_URL: Final = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]+)://")
# A PostgreSQL URL mistyped (white space before it, a slash or both missing): opened
# as a path, it would make a stray file, and the error would quote its password.
_POSTGRES_MISTYPED: Final = re.compile(
    r"\s*postgres(?:ql)?:(?!//)|\s+postgres(?:ql)?://", re.IGNORECASE
)

# A libpq keyword/value connection string ("host=db password=..."): opened as a
# path, it would make a file named after it, password and all, in the working
# directory. A file of such a name is still opened when named "./host=...". Every
# option of libpq 18 (a test checks them against the libpq installed).
_LIBPQ_KEYWORDS: Final = (
    "host|hostaddr|port|dbname|user|password|passfile|require_auth|channel_binding"
    "|connect_timeout|client_encoding|options|application_name"
    "|fallback_application_name|keepalives|keepalives_idle|keepalives_interval"
    "|keepalives_count|tcp_user_timeout|replication|gssencmode|sslmode|sslnegotiation"
    "|sslcompression|sslcert|sslkey|sslcertmode|sslpassword|sslkeylogfile|sslrootcert|sslcrl"
    "|sslcrldir|sslsni|requirepeer|ssl_min_protocol_version|ssl_max_protocol_version"
    "|min_protocol_version|max_protocol_version|krbsrvname|gsslib|gssdelegation"
    "|service|target_session_attrs|load_balance_hosts|oauth_[a-z_]+|scram_[a-z_]+"
)
_KEYWORD_VALUE: Final = re.compile(rf"\s*(?:{_LIBPQ_KEYWORDS})\s*=", re.IGNORECASE)


@overload
def open_store(
    target: str | os.PathLike[str],
    *,
    workflow: Workflow | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 30.0,
    actor: str | None = None,
    migrate: bool = True,
) -> SessionStore[CustomerSession]: ...


@overload
def open_store(
    target: str | os.PathLike[str],
    *,
    session_class: type[_S],
    workflow: Workflow | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 30.0,
    actor: str | None = None,
    migrate: bool = True,
) -> SessionStore[_S]: ...


def open_store(
    target: str | os.PathLike[str],
    *,
    session_class: type[Any] = CustomerSession,
    workflow: Workflow | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 30.0,
    actor: str | None = None,
    migrate: bool = True,
) -> SessionStore[Any]:
    """Open the store ``target`` names: a ``postgresql://`` URL or an SQLite file.

    Args:
        target: ``postgresql://user@host/db`` (or ``postgres://``) for
            :class:`PostgresStore`; a path, a ``file:`` URI or ``":memory:"`` for
            :class:`SQLiteStore`.
        session_class: The class sessions are loaded into.
        workflow: The workflow whose guards and hooks apply to loaded sessions.
        retries: How many times ``update`` re-runs a change that lost a race.
        timeout: Seconds a call waits before it raises
            :class:`~customer_session.StoreTimeout`: for another connection's write
            lock (SQLite), or for a connection from the pool (PostgreSQL, where it
            bounds each attempt to connect too, unless the URL or
            ``PGCONNECT_TIMEOUT`` gives a ``connect_timeout``: see
            :class:`PostgresStore`).
        actor: Who the journal entries of the store's commits name, unless a call
            gives its own ``actor=`` (default ``None``: nobody).
        migrate: Whether the first use creates or migrates the schema (default);
            ``False`` only checks it, for workers of a database migrated at deploy
            time (and readers that must change nothing).

    Raises:
        ValidationError: ``target`` is empty, not a path or URL, or a URL of another
            scheme than ``postgresql://`` (``mysql://``, ``sqlite:///``), a
            PostgreSQL URL mistyped (white space before it, a slash missing), a
            libpq keyword/value connection string (``host=... dbname=...``; a file
            of such a name is opened as ``./host=...``), or an option is bad.
        StoreError: The database cannot be opened (or psycopg is missing for a URL).
        SchemaNotReady: With ``migrate=False``, the database holds no store or an
            older schema (raised on first use).
    """
    given: object = target  # typed, but callers may pass anything
    text = os.fspath(target) if isinstance(given, str | os.PathLike) else None
    if not isinstance(text, str) or not text:  # a path-like may give bytes
        # An empty string would open a private temporary database: data written
        # there is gone with the process, so an unset setting must not get there.
        raise ValidationError.single(
            "open_store()",
            "target",
            f"must be a postgresql:// URL, a file path or ':memory:', got {shown(target):.80}",
        )
    if text.startswith(POSTGRES_SCHEMES):
        malformed = conninfo_problems(text, "target")
        if malformed:  # named by this function's argument, not the store's
            raise ValidationError("open_store()", malformed)
        return PostgresStore(
            text,
            session_class=session_class,
            workflow=workflow,
            retries=retries,
            timeout=timeout,
            actor=actor,
            migrate=migrate,
        )
    if _POSTGRES_MISTYPED.match(text):
        # Only what is wrong is said: the rest may hold a password.
        raise ValidationError.single(
            "open_store()",
            "target",
            "looks like a PostgreSQL URL but does not start with 'postgresql://' or "
            "'postgres://' (white space before it, or a slash missing)",
        )
    if _KEYWORD_VALUE.match(text):
        raise ValidationError.single(
            "open_store()",
            "target",
            "looks like a libpq keyword/value connection string ('host=... dbname=...'): "
            "give PostgreSQL as a postgresql:// URL (or the string to PostgresStore), "
            "or a file of that name as './name'",
        )
    url = None if text.startswith("file:") else _URL.match(text)
    if url is not None:
        # Opened as a path, a URL of another database (or a mistyped scheme) fails
        # with SQLite's "unable to open database file", or makes a stray file.
        # Only the scheme is shown: the rest may hold a password.
        raise ValidationError.single(
            "open_store()",
            "target",
            f"unsupported URL scheme {url.group(1)!r}: give a postgresql:// URL or a file path",
        )
    return SQLiteStore(
        text,
        session_class=session_class,
        workflow=workflow,
        retries=retries,
        timeout=timeout,
        actor=actor,
        migrate=migrate,
    )
