"""Slack's request signing against Slack's own published example, and mrkdwn escaping and cutting.

The example (https://docs.slack.dev/authentication/verifying-requests-from-slack) proves the tests' signer
(tests/fixtures/slack.py) builds the base string exactly as Slack does, and that the product's verification
accepts what Slack sends — a round trip between our own signer and verifier could agree on a wrong base string.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from review.channels import chat, chat_blocks, chat_interactions
from review.channels.chat_interactions import Refused
from review.models import Escalation
from tests.fixtures.slack import sign

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_the_tests_signer_reproduces_slacks_published_example():
    assert sign(SLACK_SECRET, SLACK_TIMESTAMP, SLACK_BODY) == SLACK_SIGNATURE


class _Seen:
    """A Redis stand-in for the replay check (SET NX)."""

    def __init__(self):
        self.keys = set()

    def set(self, key, value, nx, ex):
        assert nx and ex == 600
        if key in self.keys:
            return None
        self.keys.add(key)
        return True


@pytest.fixture
def at_slacks_time(monkeypatch):
    seen = _Seen()
    monkeypatch.setattr(chat_interactions, "runtime_redis", lambda: seen)
    monkeypatch.setattr(chat_interactions.time, "time", lambda: SLACK_TIMESTAMP + 30.0)
    return seen


def headers(signature=SLACK_SIGNATURE, timestamp=SLACK_TIMESTAMP):
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


def test_the_product_accepts_slacks_example_once_and_refuses_its_replay(at_slacks_time):
    chat_interactions.verify(SLACK_SECRET, SLACK_BODY, headers())
    with pytest.raises(Refused, match="replayed") as refused:
        chat_interactions.verify(SLACK_SECRET, SLACK_BODY, headers())
    assert refused.value.status == 401


@pytest.mark.parametrize(
    "secret, body, sent, message",
    [
        ("another-secret", SLACK_BODY, headers(), "bad signature"),
        (SLACK_SECRET, SLACK_BODY + b"&x=1", headers(), "bad signature"),
        (SLACK_SECRET, SLACK_BODY, headers(SLACK_SIGNATURE.replace("v0=", "v1=")), "bad signature"),
        (SLACK_SECRET, SLACK_BODY, headers(timestamp=SLACK_TIMESTAMP - 301), "stale request"),
        (SLACK_SECRET, SLACK_BODY, headers(timestamp="1531420618.5"), "not a Unix time"),
        (SLACK_SECRET, SLACK_BODY, {"X-Slack-Signature": SLACK_SIGNATURE}, "missing"),
    ],
)
def test_the_product_refuses_what_slack_did_not_sign_now(at_slacks_time, secret, body, sent, message):
    with pytest.raises(Refused, match=message) as refused:
        chat_interactions.verify(secret, body, sent)
    assert refused.value.status == 401 and at_slacks_time.keys == set()


def test_mrkdwn_escaping_and_cutting_never_leave_half_an_entity():
    assert chat_blocks.escape("<!here> & <@U1>") == "&lt;!here&gt; &amp; &lt;@U1&gt;"
    escaped = chat_blocks.escape("a" * 8 + "&&&")
    for limit in range(9, len(escaped) + 1):
        cut = chat_blocks.cut(escaped, limit)
        assert len(cut) <= limit
        assert not cut.rstrip("…").endswith(("&", "&a", "&am", "&amp")), (limit, cut)
    assert chat_blocks.cut("short", 10) == "short"


def test_chat_messages_follow_the_chat_language():
    escalation = Escalation(
        pk=7,
        operation="send_note",
        reason="sensitive_operation",
        priority="high",
        kind="tool",
        arguments={"to": "ana@example.com"},
        deadline_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
    )
    english = chat.message_for(escalation, "new", "en")
    chinese = chat.message_for(escalation, "new", "zh-hans")
    assert english["blocks"][0]["text"]["text"] == "Approval needed: send_note"
    assert chinese["blocks"][0]["text"]["text"] == "需要审批：send_note"
    labels = [button["text"]["text"] for button in chinese["blocks"][-1]["elements"]]
    assert labels == ["批准", "拒绝", "打开"]
    assert "<!date^1767323040^{date_short_pretty} {time}|2026-01-02 03:04 UTC>" in str(chinese["blocks"][1])
