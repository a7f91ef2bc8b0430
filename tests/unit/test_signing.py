"""Link tokens: short and URL-safe, dated, expiring, and impossible to alter (issue 9, hole 6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta

import pytest

from hub import signing

KEY = b"test-key"
MADE = datetime(2026, 12, 4, 14, 0, 0, 123456)


def _undated(purpose: str, *values: int) -> str:
    """A token as links were made before they carried a time (still in citizens' inboxes)."""
    payload = ".".join(str(v) for v in values)
    mac = hmac.new(KEY, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()[:16]
    return f"{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_a_token_is_short_url_safe_and_says_when_it_was_made():
    token = signing.sign(KEY, "unsubscribe", 123456, 7890123, 42, issued_at=MADE)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token) and len(token) <= 60, token
    read = signing.read(KEY, "unsubscribe", token, max_age=timedelta(days=1), now=MADE)
    assert read == signing.Signed(["123456", "7890123", "42"], MADE.replace(microsecond=123000))


def test_a_token_expires_after_its_max_age_and_not_before():
    token = signing.sign(KEY, "confirm", 1, 2, issued_at=MADE)
    week = timedelta(days=7)
    last_moment = MADE.replace(microsecond=123000) + week
    assert signing.read(KEY, "confirm", token, max_age=week, now=last_moment).values == ["1", "2"]
    with pytest.raises(signing.Expired) as expired:
        signing.read(KEY, "confirm", token, max_age=week, now=last_moment + timedelta(milliseconds=1))
    assert expired.value.issued_at == MADE.replace(microsecond=123000)


def test_a_token_cannot_be_altered_redated_undated_or_used_for_another_purpose():
    token = signing.sign(KEY, "confirm", 1, 2, issued_at=MADE)
    values, issued, mac = token.split(".")[:2], token.split(".")[2], token.split(".")[3]
    newer = signing.sign(KEY, "confirm", 1, 2, issued_at=MADE + timedelta(days=30)).split(".")[2]
    forged = {
        "other endpoint": f"9.2.{issued}.{mac}",
        "re-dated": f"{'.'.join(values)}.{newer}.{mac}",
        "time removed": f"{'.'.join(values)}.{mac}",
        "truncated": token[:-2],
        "non-ASCII": token[:-1] + "é",
        "too long": "1." * 200 + mac,
        "empty": "",
    }
    for name, text in forged.items():
        with pytest.raises(signing.BadToken):
            signing.read(KEY, "confirm", text, max_age=None, now=MADE)
        assert not isinstance(_error(text), signing.Expired), name
    with pytest.raises(signing.BadToken):
        signing.read(KEY, "unsubscribe", token, max_age=None, now=MADE)
    with pytest.raises(signing.BadToken):
        signing.read(b"another-key", "confirm", token, max_age=None, now=MADE)


def _error(text: str) -> Exception | None:
    try:
        signing.read(KEY, "confirm", text, max_age=None, now=MADE)
    except signing.BadToken as exc:
        return exc
    return None


def test_tokens_made_before_links_carried_a_time_still_verify_undated():
    old = _undated("unsubscribe", 5, 6, 7)
    read = signing.read(KEY, "unsubscribe", old, max_age=timedelta(days=1), now=MADE)
    assert read == signing.Signed(["5", "6", "7"], None)
    assert signing.verify(KEY, "unsubscribe", old) == ["5", "6", "7"]
