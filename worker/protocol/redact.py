"""Redaction: what of a URL, an error or a log line may be shown in logs, status details and ``/health``.

URLs come from requesters (datasets, input files, result proxies) and operators (node URLs with API
keys in the path or the query, registry passwords). Three rules, one module, used by the log
formatters, ``/health`` and configuration errors alike:

- :func:`display_url`: a URL without user, password, query or fragment (signed URLs, tokens);
- :func:`display_origin`: ``scheme://host:port`` only, for operator endpoints whose path holds a key;
- :func:`redact`: any text (an exception from a library quotes the whole URL it failed on) with every
  URL shown as :func:`display_url` and every registered secret replaced by ``***``.

Secrets are registered once, when the worker reads its settings (:func:`register_secret`,
:func:`register_url_secrets`): the wallet password, registry passwords, the parts of node URLs that
may hold an API key.
"""

from __future__ import annotations

import re
import threading

from yarl import URL

MASK = "***"
# Shorter values would mask ordinary words ("v3", "rpc") without protecting anything.
MIN_SECRET_LENGTH = 6
_URL_IN_TEXT = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'"<>`]+""")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def display_url(url: str) -> str:
    """``url`` without user, password, query or fragment, which may hold secrets (signed URLs, tokens)."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<unparsable URL>"
    if not parsed.is_absolute():
        return str(parsed.with_query(None).with_fragment(None))
    shown = parsed.with_user(None).with_password(None).with_query(None).with_fragment(None)
    return str(shown) + ("?…" if parsed.query_string else "")


def display_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: node URLs carry their API key in the path or the query."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<unparsable URL>"
    port = f":{parsed.explicit_port}" if parsed.explicit_port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def register_secret(value: str | None) -> None:
    """From now on, :func:`redact` replaces ``value`` wherever it appears."""
    global _secrets
    if value is None or len(value.strip()) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets = _secrets | {value, value.strip()}


def register_url_secrets(url: str) -> None:
    """Register what of an operator's URL may hold a key: user info, path, query and fragment."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        register_secret(url)
        return
    for part in (parsed.user, parsed.password, parsed.raw_user, parsed.raw_password, parsed.fragment):
        register_secret(part)
    path = parsed.raw_path.strip("/")
    register_secret(path)
    # Each path segment too: an error may quote the path re-encoded or cut.
    for segment in path.split("/"):
        register_secret(segment)
    register_secret(parsed.raw_query_string)
    for value in parsed.query.values():
        register_secret(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests, and a worker that reloads its settings)."""
    global _secrets
    with _lock:
        _secrets = frozenset()


def redact(text: str) -> str:
    """``text`` with its URLs shown as :func:`display_url` and every registered secret masked."""
    shown = _URL_IN_TEXT.sub(lambda match: _display_in_text(match.group(0)), text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in shown:
            shown = shown.replace(secret, MASK)
    return shown


def _display_in_text(url: str) -> str:
    # A URL quoted in prose often ends with punctuation that is not part of it.
    core = url.rstrip(".,;:)]}'\"")
    return display_url(core) + url[len(core) :]
