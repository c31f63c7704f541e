"""Approvals in chat, end to end: the real worker posts a Block Kit message to the Slack mock when an
escalation is created; button presses signed exactly as Slack signs them (tests/fixtures/slack.py's own
signer) reach the real web process at /hooks/slack/interactive, decide through review.actions as the linked
reviewer, and the message is replaced through its response URL. Everything that is not an authentic press of
a reviewer who may decide the item, at the version the message showed, is refused and decides nothing."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from agentops.lib.queue import send_now
from agentops.runs.models import Run
from review import actions as review
from review.actions import save_chat_settings
from review.models import AuditEvent, ChatConfig, ChatSettings, Escalation, ReviewerProfile
from tests.fixtures import factories
from tests.fixtures.factories import run_in
from tests.fixtures.people import ROOT, client_for
from tests.fixtures.slack import SIGNING_SECRET, form_body, signed_headers
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ALICE_CHAT, CHARLIE_CHAT, NOBODY_CHAT = "U0ALICE01", "U0CHARLIE", "U0NOBODY1"


@pytest.fixture
def chat_on(slack, redis_client, settings):
    """Chat configured in the admin's row: messages to the Slack mock, presses signed with SIGNING_SECRET."""
    settings.AGENTOPS_AGENT_MODULES = ["tests.fixtures.test_agents"]
    reseed_runtime()
    save_chat_settings(ChatSettings(webhook_url=slack.webhook_url, signing_secret=SIGNING_SECRET, language="en"))
    return slack


def link(user, chat_user_id: str) -> None:
    ReviewerProfile.objects.update_or_create(user=user, defaults={"chat_user_id": chat_user_id})


def message_of(slack, escalation: Escalation, notice: str = "new"):
    """The message the worker posted for ``escalation`` (waits for it)."""

    def about(message) -> bool:
        actions = message.block("actions") or {}
        return actions.get("block_id") == f"escalation-{escalation.pk}" and (
            (notice == "reminder") == ("Reminder" in message.text)
        )

    return slack.wait_for_message(about)


def decided_events(escalation: Escalation) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(escalation=escalation, event="decided"))


def assert_nothing_decided(escalation: Escalation) -> None:
    escalation.refresh_from_db()
    assert escalation.is_open and escalation.decision == "" and decided_events(escalation) == []


# --- the message -----------------------------------------------------------------------------------------
def test_a_new_escalation_posts_a_block_kit_message_with_escaped_arguments_and_the_buttons(worker, chat_on, stack_env):
    slack = chat_on
    hostile = {"to": "<!channel> & <https://evil.example|click>", "body": "```done``` <@U999>"}
    escalation = factories.make_escalation(arguments=hostile)
    message = message_of(slack, escalation)

    blocks = message.body["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "actions"]
    assert blocks[0]["text"]["text"] == "Approval needed: send_note"
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in blocks[1]["fields"]}
    assert fields["*Agent*"] == "t-approval" and fields["*Operation*"] == "send_note"
    assert fields["*Priority*"].endswith("High") and fields["*Escalation*"] == f"#{escalation.pk}"
    stamp = int(escalation.deadline_at.timestamp())
    assert fields["*Deadline*"].startswith(f"<!date^{stamp}^")
    arguments = blocks[3]["text"]
    assert arguments["verbatim"] is True and arguments["text"].startswith("*Arguments*\n```")
    # Slack's three control characters are entities: no mention, no link, no early end of the code block
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in arguments["text"]
    assert "&lt;@U999&gt;" in arguments["text"] and "<" not in arguments["text"] and ">" not in arguments["text"]
    assert arguments["text"].count("```") == 2
    assert "&lt;!channel&gt;" not in message.text  # the notification text names no arguments at all

    approve, reject, open_ = (message.button(a) for a in ("approve", "reject", "open"))
    assert approve["style"] == "primary" and approve["text"]["text"] == "Approve"
    assert reject["style"] == "danger" and reject["confirm"]["confirm"]["text"] == "Reject"
    assert reject["confirm"]["title"]["text"] == "Reject this action?"
    assert open_["url"] == f"{stack_env['PUBLIC_URL']}/review/{escalation.pk}/" and "style" not in open_
    assert json.loads(approve["value"]) == json.loads(reject["value"]) == {"escalation": escalation.pk, "version": 0}

    posted = wait_for(lambda: AuditEvent.objects.filter(escalation=escalation, event="posted_to_chat").first())
    assert posted.data == {"notice": "new", "ok": True, "status": 200, "error": "", "version": 0}


def test_an_llm_take_over_item_has_no_approve_button_and_huge_arguments_are_cut(worker, chat_on):
    slack = chat_on
    take_over = factories.make_escalation(
        kind="llm", reason="all_fallbacks_failed", operation="planning", arguments={"messages": ["x&" * 5000]}
    )
    message = message_of(slack, take_over)
    assert message.button("approve") is None
    assert [e["action_id"] for e in message.block("actions")["elements"]] == ["reject", "open"]
    for block in message.body["blocks"]:
        text = (block.get("text") or {}).get("text", "")
        assert len(text) <= 3000, block["type"]
    request = message.body["blocks"][-2]["text"]["text"]
    assert request.startswith("*Request*\n```") and request.endswith("…```")
    assert request[:-4].endswith(("&amp;", "x")), request[-20:]  # never half an entity before the cut
    assert len(message.body["blocks"]) <= 50


def test_a_reminder_is_a_short_message_with_the_same_buttons(worker, chat_on):
    slack = chat_on
    escalation = factories.make_escalation()
    message_of(slack, escalation)
    send_now("review.notify", escalation.pk, "reminder")  # as review.remind_due sends it
    reminder = message_of(slack, escalation, "reminder")
    assert reminder.text.startswith(":alarm_clock: *Reminder*: escalation")
    assert [b["type"] for b in reminder.body["blocks"]] == ["section", "actions"]
    assert reminder.button("approve") is not None


def test_chat_off_posts_nothing(worker, slack):
    escalation = factories.make_escalation()
    wait_for(lambda: AuditEvent.objects.filter(escalation=escalation, event="created").exists())
    time.sleep(1.0)  # the notify task ran (or would have): nothing was posted
    assert slack.messages == [] and not AuditEvent.objects.filter(event="posted_to_chat").exists()


# --- deciding from chat ------------------------------------------------------------------------------------
def test_approve_from_chat_resumes_the_run_audits_the_channel_and_replaces_the_message(worker, web, chat_on, alice):
    slack = chat_on
    link(alice, ALICE_CHAT)
    run, escalation = factories.waiting_approval_run()
    message = message_of(slack, escalation)

    answer = slack.press(web.extra["url"], message, "approve", ALICE_CHAT)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "decision": "approved"}

    run = wait_for(run_in(run.pk, Run.Status.SUCCEEDED))
    escalation.refresh_from_db()
    assert (escalation.state, escalation.decision, escalation.decided_by) == ("decided", "approved", alice)
    [event] = decided_events(escalation)
    assert event.actor == alice and event.data["channel"] == "chat" and event.data["decision"] == "approved"

    replaced = slack.wait_for_response(message)
    assert replaced["replace_original"] is True and "✅ *Approved by alice*" in replaced["text"]
    assert [b["type"] for b in replaced["blocks"]] == ["section", "context"]  # the buttons are gone
    assert f"/review/{escalation.pk}/|Open in agentops>" in replaced["blocks"][1]["elements"][0]["text"]


def test_reject_from_chat_and_a_second_press_says_it_was_already_decided(worker, web, chat_on, alice, bob):
    slack = chat_on
    link(alice, ALICE_CHAT)
    link(bob, "U0BOB0001")
    escalation = factories.make_escalation()
    message = message_of(slack, escalation)
    assert slack.press(web.extra["url"], message, "reject", ALICE_CHAT).status_code == 200
    first = slack.wait_for_response(message)
    assert "❌ *Rejected by alice*" in first["text"]

    late = slack.press(web.extra["url"], message, "approve", "U0BOB0001")
    assert late.status_code == 409 and "Rejected by alice" in late.json()["text"]
    second = slack.wait_for(lambda: message.responses[1] if len(message.responses) > 1 else None)
    assert "your button press was not applied" in second["text"] and second["replace_original"] is True
    escalation.refresh_from_db()
    assert escalation.decision == "rejected" and len(decided_events(escalation)) == 1


def test_a_press_on_an_item_someone_holds_decides_nothing_and_the_message_says_it_changed(
    worker, web, chat_on, alice, bob
):
    slack = chat_on
    link(alice, ALICE_CHAT)
    looked_at, escalation = factories.make_escalation(), factories.make_escalation()
    # alice opened the first in the browser and left it: who looked at an item does not change it
    review.claim(looked_at.pk, alice)
    review.release(looked_at.pk, alice)
    answer = slack.press(web.extra["url"], message_of(slack, looked_at), "approve", ALICE_CHAT)
    assert answer.status_code == 200 and answer.json()["decision"] == "approved"

    message = message_of(slack, escalation)
    review.claim(escalation.pk, bob)  # bob is working on the second one

    answer = slack.press(web.extra["url"], message, "approve", ALICE_CHAT)
    assert answer.status_code == 409 and "changed since this message" in answer.json()["text"]
    assert_nothing_decided(escalation)
    replaced = slack.wait_for_response(message)
    assert "changed since this message" in replaced["text"] and "blocks" in replaced
    assert all(b["type"] != "actions" for b in replaced["blocks"])


def test_an_unlinked_chat_user_gets_an_ephemeral_answer_and_decides_nothing(worker, web, chat_on, stack_env):
    slack = chat_on
    escalation = factories.make_escalation()
    message = message_of(slack, escalation)
    answer = slack.press(web.extra["url"], message, "approve", NOBODY_CHAT)
    assert answer.status_code == 403
    assert answer.json()["response_type"] == "ephemeral" and answer.json()["replace_original"] is False
    assert (
        NOBODY_CHAT in answer.json()["text"] and f"{stack_env['PUBLIC_URL']}/review/settings/" in answer.json()["text"]
    )
    reply = slack.wait_for_response(message)
    assert reply["response_type"] == "ephemeral" and "not linked" in reply["text"]
    assert_nothing_decided(escalation)


def test_a_linked_user_without_the_role_is_refused(worker, web, chat_on, charlie, alice):
    slack = chat_on
    link(charlie, CHARLIE_CHAT)
    link(alice, ALICE_CHAT)
    escalation = factories.make_escalation()
    message = message_of(slack, escalation)
    answer = slack.press(web.extra["url"], message, "approve", CHARLIE_CHAT)
    assert answer.status_code == 403 and "(charlie) may not decide" in answer.json()["text"]
    assert_nothing_decided(escalation)

    # an expert-queue item is not alice's to decide either
    review.escalate_to_expert(escalation.pk, alice)
    answer = slack.press(web.extra["url"], message, "reject", ALICE_CHAT)
    assert answer.status_code == 403 and "(alice) may not decide" in answer.json()["text"]
    escalation.refresh_from_db()
    assert escalation.queue == "experts" and decided_events(escalation) == []


# --- requests that are not authentic presses ---------------------------------------------------------------
@pytest.fixture
def pressable(chat_on, alice, web):
    """An open escalation, alice linked, and a signed-able approve payload for it (no worker needed)."""
    link(alice, ALICE_CHAT)
    escalation = factories.make_escalation()
    value = json.dumps({"escalation": escalation.pk, "version": escalation.version})
    payload = {
        "type": "block_actions",
        "user": {"id": ALICE_CHAT},
        "response_url": chat_on.url + "/respond/1",
        "actions": [{"action_id": "approve", "value": value, "type": "button"}],
    }
    return escalation, payload, web.extra["url"] + "/hooks/slack/interactive"


def post(url: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_bad_signature_stale_timestamp_and_replay_are_refused(pressable):
    escalation, payload, url = pressable
    body = form_body(payload)

    forged = post(url, body, signed_headers(body, secret="not-the-secret-" + "x" * 20))
    assert (forged.status_code, forged.json()["error"]) == (401, "bad signature")
    tampered = signed_headers(body)
    assert post(url, body.replace(b"approve", b"reject"), tampered).status_code == 401
    stale = post(url, body, signed_headers(body, timestamp=int(time.time()) - 301))
    assert stale.status_code == 401 and stale.json()["error"].startswith("stale request")
    ahead = post(url, body, signed_headers(body, timestamp=int(time.time()) + 400))
    assert ahead.status_code == 401
    unsigned = post(url, body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401 and "missing" in unsigned.json()["error"]
    assert_nothing_decided(escalation)

    headers = signed_headers(body)
    first = post(url, body, headers)
    assert first.status_code == 200 and first.json()["decision"] == "approved"
    again = post(url, body, headers)
    assert (again.status_code, again.json()["error"]) == (401, "replayed request: this signature was already used")
    assert len(decided_events(escalation)) == 1


@pytest.mark.parametrize(
    "mangle, error",
    [
        (lambda p: b"nothing=here", "the form has no payload field"),
        (lambda p: form_body("{not json"), "the payload is not JSON"),
        (lambda p: form_body({**p, "type": "view_submission"}), "only block_actions interactions are handled here"),
        (lambda p: form_body({k: v for k, v in p.items() if k != "user"}), "the payload names no user.id"),
        (lambda p: form_body({**p, "actions": []}), "the payload has no actions"),
        (lambda p: form_body({**p, "actions": [{"action_id": "delete_all"}]}), "unknown action_id"),
        (
            lambda p: form_body({**p, "actions": [{"action_id": "approve", "value": "7"}]}),
            "the button's value is not an escalation and a version",
        ),
        (
            lambda p: form_body(
                {**p, "actions": [{"action_id": "approve", "value": '{"escalation": "1", "version": 0}'}]}
            ),
            "the button's value is not an escalation and a version",
        ),
        (lambda p: form_body({k: v for k, v in p.items() if k != "response_url"}), "the payload has no response_url"),
        (lambda p: form_body({**p, "response_url": "file:///etc/passwd"}), "response_url refused"),
        (lambda p: b"payload=\xff\xfe", "the body is not UTF-8"),
    ],
)
def test_malformed_presses_are_400_and_decide_nothing(pressable, mangle, error):
    escalation, payload, url = pressable
    body = mangle(payload)
    answer = post(url, body, signed_headers(body))
    assert answer.status_code == 400 and answer.json()["error"].startswith(error), answer.text
    assert_nothing_decided(escalation)


def test_open_is_acknowledged_and_get_or_an_unconfigured_hook_is_refused(pressable):
    escalation, payload, url = pressable
    body = form_body({**payload, "actions": [{"action_id": "open", "value": "", "url": "x"}]})
    assert post(url, body, signed_headers(body)).json() == {"ok": True}
    assert httpx.get(url, timeout=10).status_code == 405
    ChatSettings.objects.all().delete()
    body = form_body(payload)
    off = post(url, body, signed_headers(body))
    assert (off.status_code, off.json()["error"]) == (404, "chat approvals are not configured")
    assert_nothing_decided(escalation)


# --- the settings ------------------------------------------------------------------------------------------
def test_the_admin_saves_chat_settings_never_shows_the_secret_and_the_environment_wins(root, slack, settings):
    client = client_for(ROOT)
    secret = "s3cret-value-abcdef-123456"
    added = client.post(
        "/admin/review/chatsettings/add/", {"webhook_url": slack.webhook_url, "signing_secret": secret, "language": ""}
    )
    assert added.status_code == 302, added.content.decode()[-2000:]
    assert ChatSettings.objects.get().signing_secret == secret
    page = client.get("/admin/review/chatsettings/1/change/").content.decode()
    assert secret not in page and "••••3456" in page

    kept = client.post(
        "/admin/review/chatsettings/1/change/",
        {"webhook_url": slack.webhook_url, "signing_secret": "", "language": "zh-hans"},
    )
    assert kept.status_code == 302 and ChatSettings.objects.get().signing_secret == secret
    assert ChatSettings.current() == ChatConfig(slack.webhook_url, secret, "zh-hans")

    settings.AGENTOPS_ALLOW_PRIVATE_URLS = []  # as in production: no private address for a webhook
    refused = client.post(
        "/admin/review/chatsettings/1/change/",
        {"webhook_url": "http://10.1.2.3/hook", "signing_secret": "", "language": ""},
    )
    assert refused.status_code == 200 and "not public (private)" in refused.content.decode()
    assert ChatSettings.objects.get().webhook_url == slack.webhook_url

    settings.SLACK_SIGNING_SECRET, settings.SLACK_WEBHOOK_URL = "from-the-environment", "https://hooks.slack.com/x"
    assert ChatSettings.current() == ChatConfig("https://hooks.slack.com/x", "from-the-environment", "zh-hans")
