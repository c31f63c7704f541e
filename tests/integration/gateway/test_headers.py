"""Our response headers carry upstream text (the model name the upstream answered with): a name with
control characters must still give a well-formed answer, never a dropped connection (found by the gateway
fuzz test, which hit it now and then)."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.gateway.conftest import UPSTREAM_ONLY

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_model_name_with_control_characters_still_gets_an_answer(gateway, make_key, mock):
    headers = {"Authorization": f"Bearer {make_key('gw-header')}"}
    body = {"model": UPSTREAM_ONLY + "\x0f\x7f", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{gateway}/chat/completions", json=body, headers=headers, timeout=10)
    assert response.status_code == 200 and response.json()["model"] == body["model"]
    assert response.headers["x-agentops-model"] == UPSTREAM_ONLY + "??"
