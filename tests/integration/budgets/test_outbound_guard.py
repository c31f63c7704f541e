"""Webhooks and provider base URLs never reach inside addresses (issue 14, item 8; agentops/lib/netguard.py).

Refused: loopback, link-local (169.254.0.0/16 with the cloud metadata address, fe80::/10), private and
unspecified addresses — at save (a form error) and again for every request after DNS resolution, redirect
hops included — unless AGENTOPS_ALLOW_PRIVATE_URLS lists them. The delivery log keeps a status code and an
error class, never the far end's answer.

Only loopback addresses are ever contacted: 127.0.0.1 plays "allowed", 127.0.0.2 plays "inside" (the worker
below allow-lists 127.0.0.1/32 only). The other addresses are only typed into forms, never connected to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from agentops.config import actions as config_actions
from agentops.config.models import Provider
from agentops.lib import netguard
from agentops.runtime.errors import ProviderError
from agentops.runtime.providers.base import LLMRequest
from budgets.actions import alerts, webhooks
from budgets.models import Alert, Webhook, WebhookDelivery
from tests.fixtures.people import BEA, client_for
from tests.fixtures.runtime import free_port
from tests.fixtures.stack import Proc, start_worker
from tests.fixtures.waiting import wait_for
from tests.integration.budgets.conftest import Receiver, delivery_in

INSIDE = [
    "http://127.0.0.1:6379/",  # Redis on loopback
    "http://localhost:5432/",  # a name that resolves to loopback
    "http://[::1]:8000/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[fe80::1]/",
    "http://10.1.2.3/",
    "http://192.168.1.10/hook",
    "http://172.16.0.1/",
    "http://0.0.0.0:8000/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://100.100.100.200/",  # shared address space (another cloud's metadata address)
]


@pytest.fixture(scope="module")
def inside() -> Iterator[Receiver]:
    """Plays an inside service (127.0.0.2: loopback, not allow-listed): it must never get a request."""
    server = Receiver(host="127.0.0.2")
    yield server
    server.close()


class Redirector:
    """Answers every request with a 302 to `target`, and counts them."""

    def __init__(self, target: str):
        self.hits = 0
        redirector = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def _answer(self):
                redirector.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def redirector(inside) -> Iterator[Redirector]:
    server = Redirector(inside.path([200]))
    yield server
    server.server.shutdown()
    server.server.server_close()


# --- at save -------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(settings, db) -> Client:
    """Bea, the cast's budget admin, signed in."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # sign-ins are not the subject
    return client_for(BEA)


@pytest.mark.parametrize("url", INSIDE)
def test_the_webhook_form_refuses_inside_addresses(admin_client, settings, url):
    settings.AGENTOPS_ALLOW_PRIVATE_URLS = []
    form = {"name": "inside", "url": url, "min_severity": "info", "enabled": "on"}
    response = admin_client.post("/budgets/webhooks/", form)
    assert response.status_code == 422, response.content[:500]
    assert b"Webhooks may only reach public addresses" in response.content
    assert not Webhook.objects.filter(name="inside").exists()
    with pytest.raises(ValidationError) as refused:  # every caller of the action, not only the form
        webhooks.save_webhook(Webhook(name="inside", url=url))
    assert "url" in refused.value.message_dict


def test_the_operator_allow_list_lets_a_loopback_webhook_be_saved(admin_client, settings):
    settings.AGENTOPS_ALLOW_PRIVATE_URLS = ["127.0.0.1/32"]
    form = {"name": "local", "url": "http://127.0.0.1:9/hook", "min_severity": "info", "enabled": "on"}
    assert admin_client.post("/budgets/webhooks/", form).status_code == 302
    assert Webhook.objects.filter(name="local").exists()
    form = {"name": "other", "url": "http://127.0.0.2:9/hook", "min_severity": "info", "enabled": "on"}
    assert admin_client.post("/budgets/webhooks/", form).status_code == 422  # the list is exact


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["http://localhost:11434/v1", "http://169.254.169.254/v1", "http://[::1]/v1"])
def test_a_provider_base_url_inside_is_refused_at_save(settings, url):
    settings.AGENTOPS_ALLOW_PRIVATE_URLS = []
    with pytest.raises(ValidationError) as refused:
        config_actions.save_runtime_object(Provider(name="inside", kind=Provider.Kind.OPENAI, base_url=url))
    assert "may only be reached at a public address" in refused.value.message_dict["base_url"][0]
    assert not Provider.objects.filter(name="inside").exists()


# --- at request time, after DNS --------------------------------------------------------------------------


def test_a_provider_never_calls_an_inside_address_and_does_not_retry_it(settings, mock):
    """A base URL saved before the rule (or a name whose DNS answer changed): the request is refused after
    resolution, before a byte leaves, as a permanent error (the chain moves on instead of retrying)."""
    from agentops.wiring import build_provider

    root = mock.root_url.replace("127.0.0.1", "localhost")  # a name that resolves to loopback
    row = Provider(name="inside", kind=Provider.Kind.OPENAI, base_url=root + "/v1", api_key="k")
    request = LLMRequest(messages=[{"role": "user", "content": "hello there"}], model="gpt-4o-mini")
    before = mock.stats()

    settings.AGENTOPS_ALLOW_PRIVATE_URLS = []
    with pytest.raises(ProviderError) as refused:
        build_provider(row).complete(request, timeout=5)
    assert refused.value.transient is False and refused.value.reason == "refused_address"
    assert mock.stats() == before, "the inside address was reached"

    settings.AGENTOPS_ALLOW_PRIVATE_URLS = ["127.0.0.1"]  # the operator allows it: the same call goes through
    assert build_provider(row).complete(request, timeout=5).text


def test_a_name_resolving_inside_is_refused_at_request_time(settings, receiver):
    settings.AGENTOPS_ALLOW_PRIVATE_URLS = ["::1"]  # "localhost" resolves to 127.0.0.1 here: not allowed
    client = httpx.Client(transport=netguard.guarded_transport(httpx.HTTPTransport)())
    url = receiver.path([200])
    with pytest.raises(netguard.RefusedURL, match=r"resolves to 127\.0\.0\.1"):
        client.post(url.replace("127.0.0.1", "localhost"), json={})
    assert receiver.received(url) == []


def test_every_redirect_hop_is_checked(settings, redirector, inside):
    settings.AGENTOPS_ALLOW_PRIVATE_URLS = ["127.0.0.1/32"]
    following = httpx.Client(transport=netguard.guarded_transport(httpx.HTTPTransport)(), follow_redirects=True)
    received = sum(len(inside.received(inside.url + path)) for path in inside.scripts)
    with pytest.raises(netguard.RefusedURL, match=r"127\.0\.0\.2"):
        following.post(redirector.url, json={})
    assert redirector.hits >= 1
    assert sum(len(inside.received(inside.url + path)) for path in inside.scripts) == received


# --- delivery through the real worker ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_worker(_workers, stack_env, logdir) -> Iterator[Proc]:
    """A real Celery worker whose operator allow-list is 127.0.0.1/32 only, with no retries (one attempt is
    the whole story). The session's shared worker would take the same tasks, so it is stopped first."""
    shared = _workers.get("w1")
    if shared is not None:
        shared.stop()
    env = {**stack_env, "AGENTOPS_ALLOW_PRIVATE_URLS": "127.0.0.1/32", "WEBHOOK_MAX_RETRIES": "0"}
    proc = start_worker(env, logdir, name="outbound", concurrency=1)
    yield proc
    proc.stop()


@pytest.fixture
def no_webhooks(transactional_db, redis_client) -> None:
    WebhookDelivery.objects.all().delete()
    Webhook.objects.all().delete()
    Alert.objects.all().delete()


def unchecked_webhook(name: str, url: str) -> Webhook:
    """A row as if saved before this rule existed (no validation): delivery must refuse it by itself."""
    return Webhook.objects.create(name=name, url=url)


def test_delivery_refuses_an_inside_address_that_got_into_the_table(guarded_worker, no_webhooks, inside):
    url = inside.path([200])
    hook = unchecked_webhook("inside", url)
    alert = alerts.fire_alert(Alert.Kind.EXHAUSTED, "guard-inside", "budget exhausted", severity="critical")

    delivery = wait_for(delivery_in(alert, hook, "delivered", "failed"))
    assert delivery.status == "failed" and delivery.attempts == 1
    assert delivery.last_status_code is None
    assert delivery.last_error.startswith("RefusedURL") and "127.0.0.2" in delivery.last_error
    assert inside.received(url) == []


def test_delivery_does_not_follow_a_redirect_inside(guarded_worker, no_webhooks, redirector, inside):
    received = sum(len(inside.received(inside.url + path)) for path in inside.scripts)
    hits = redirector.hits
    hook = webhooks.save_webhook(Webhook(name="bouncer", url=redirector.url))  # allowed: 127.0.0.1
    alert = alerts.fire_alert(Alert.Kind.EXHAUSTED, "guard-redirect", "budget exhausted", severity="critical")

    delivery = wait_for(delivery_in(alert, hook, "delivered", "failed"))
    assert delivery.status == "failed" and delivery.last_status_code == 302
    assert redirector.hits == hits + 1
    assert sum(len(inside.received(inside.url + path)) for path in inside.scripts) == received


def test_the_delivery_log_keeps_no_response_body(guarded_worker, no_webhooks, receiver, settings):
    url = receiver.path([500])  # answers "receiver is having a bad day"
    hook = webhooks.save_webhook(Webhook(name="talkative", url=url))
    alert = alerts.fire_alert(Alert.Kind.EXHAUSTED, "guard-body", "budget exhausted", severity="critical")

    delivery = wait_for(delivery_in(alert, hook, "failed"))
    assert [entry["status_code"] for entry in delivery.log] == [500]
    assert delivery.log[0]["error"] == "HTTP 500" and delivery.last_error == "HTTP 500"
    assert len(receiver.received(url)) == 1

    # a row logged before the log stopped keeping answers shows no more than a new one
    now = timezone.now()
    old = Alert.objects.create(kind="test", message="logged long ago", dedup_key="guard-old", created_at=now)
    WebhookDelivery.objects.create(  # no task: nothing rewrites it
        webhook=hook,
        alert=old,
        status="failed",
        created_at=now,
        updated_at=now,
        last_status_code=500,
        last_error="HTTP 500: redis_version:7.0 bad day",
        log=[{"at": now.isoformat(), "status_code": 500, "error": "HTTP 500: redis_version:7.0 bad day"}],
    )

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # sign-ins are not the subject
    client = client_for(BEA)
    page = client.get("/budgets/webhooks/")
    assert page.status_code == 200 and b"HTTP 500" in page.content
    assert b"bad day" not in page.content and b"redis_version" not in page.content
