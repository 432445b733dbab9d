"""What of a URL may be shown: pure unit tests."""

from __future__ import annotations

from worker.protocol.redact import display_url


def test_display_url_hides_credentials_and_query() -> None:
    shown = display_url("https://alice:s3cret@example.com/data.bin?X-Amz-Signature=abcd#frag")
    assert shown == "https://example.com/data.bin?…"
    assert display_url("https://example.com/data.bin") == "https://example.com/data.bin"
