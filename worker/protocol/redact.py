"""Redaction: what of a URL or an error may be shown in logs, status details and ``/health``.

URLs come from requesters (datasets, input files, result proxies) and operators (node URLs with API
keys in the path or the query): user, password, query and fragment are never shown.
"""

from __future__ import annotations

from yarl import URL


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
