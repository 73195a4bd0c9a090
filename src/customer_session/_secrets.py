"""Keeping connection-string secrets out of messages: the stores' and the command line's.

A PostgreSQL connection string (a ``postgresql://`` URL or ``key=value`` words)
may hold a password or another secret. Every message that shows one shows it
without them: the stores name their database by :func:`redacted`, and the
command line quotes what was typed with :func:`masked`.
"""

from __future__ import annotations

import functools
import re
from typing import Final
from urllib.parse import unquote

# libpq's options whose values are secrets, never shown: those it marks as such
# ("*" in PQconndefaults: the password, the SSL key's password, the OAuth client
# secret) and the SCRAM keys, which it marks as debug options only but which
# authenticate as the password does. Named here, not asked of libpq, so that a
# string an older libpq cannot parse (which names no options) is hidden as well.
SECRET_OPTIONS: Final = (
    "password",
    "sslpassword",
    "oauth_client_secret",
    "scram_client_key",
    "scram_server_key",
)
_SECRET_OPTION: Final = "|".join(SECRET_OPTIONS)
# Where a secret may be in a connection string: a URL's user information, and a
# secret keyword's value up to the next keyword (a space in a value unquoted
# splits it, and libpq names the second half).
_SECRETS: Final = (
    re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:([^/?#]*)@"),
    re.compile(rf"(?:^|\s)(?:{_SECRET_OPTION})\s*=\s*(.*?)(?=\s+\w+\s*=|$)", re.DOTALL),
)
# A URL's parameter, name and value: a secret option's value is a secret whatever
# the spelling of its name, which libpq percent-decodes as it does the value.
_URL_PARAMETER: Final = re.compile(r"[?&]([^=&#]*)=([^&#]*)")
# Where a URL may start inside a word typed on the command line (``--db=postgresql://``).
_URL_START: Final = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://")
# Where a keyword's value starts inside such a word (``--opt=password=...``).
_VALUE_START: Final = re.compile(r"(?<==)")


def secret_spans(conninfo: str) -> list[tuple[int, int]]:
    """Where the secrets of the connection string ``conninfo`` are, as ``(start, end)``.

    Without parsing it (an unparsable string may still hold a password): the
    password of a URL's user information, the value of a secret keyword, and of a
    URL parameter naming a secret option (however percent-encoded its name is).
    Empty values are left out.
    """
    spans = [m.span(1) for pattern in _SECRETS for m in pattern.finditer(conninfo)]
    spans += [
        m.span(2)
        for m in _URL_PARAMETER.finditer(conninfo)
        if unquote(m.group(1)) in SECRET_OPTIONS
    ]
    return [(start, end) for start, end in spans if end > start]


def masked(text: str) -> str:
    """``text``, a word typed on the command line, with each secret in it replaced by ``***``.

    A word may be a connection string, or hold one after an option's ``=`` or from
    a URL's scheme on (``--db=postgresql://user:pw@host/db``): each is looked in.
    A word holding none is returned as it is.
    """
    starts = {0} | {m.start() for m in _URL_START.finditer(text)}
    starts |= {m.start() for m in _VALUE_START.finditer(text)}
    spans = sorted(
        (offset + start, offset + end)
        for offset in starts
        for start, end in secret_spans(text[offset:])
    )
    pieces: list[str] = []
    shown_to = 0  # text before this index is in pieces
    for start, end in spans:
        if end <= shown_to:  # within a secret already hidden
            continue
        if start >= shown_to:
            pieces += [text[shown_to:start], "***"]
        shown_to = end
    return "".join([*pieces, text[shown_to:]])


def redacted(conninfo: str) -> str:
    """The connection string without its password nor any other secret (for messages).

    It is shown as libpq's ``key=value`` words, the secrets as ``***``; one psycopg
    cannot parse (or without psycopg) as ``<connection string>``.
    """
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: PLC0415 - optional dependency

        parts = conninfo_to_dict(conninfo)
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return "<connection string>"
    for keyword in parts.keys() & {*SECRET_OPTIONS, *_hidden_options()}:
        parts[keyword] = "***"
    return make_conninfo(**{key: str(value) for key, value in parts.items()})


@functools.cache
def _hidden_options() -> frozenset[str]:
    """The options this libpq marks as secret ("*"), those of later versions included."""
    from psycopg import pq  # noqa: PLC0415 - optional dependency, there when this is called

    return frozenset(
        option.keyword.decode() for option in pq.Conninfo.get_defaults() if option.dispchar == b"*"
    )
