"""Callbacks from chat platforms, mounted at /hooks/ (a machine path: no session, no CSRF token, no login —
each request proves itself with its platform's signature instead)."""

from __future__ import annotations

from django.http import JsonResponse
from django.utils import translation
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from review.channels import chat_interactions
from review.channels.chat_interactions import Refused
from review.models import ChatSettings


@csrf_exempt
@require_POST
def slack_interactive(request):
    """`POST /hooks/slack/interactive`: a Slack-compatible button press (the Slack app's Interactivity
    request URL). 200 when decided (or an Open link acknowledged); 401 unsigned, badly signed, stale or
    replayed; 400 malformed; 403 a chat user not linked to a reviewer who may decide the item; 409 the item
    was decided, expired or changed since the message. The message itself is replaced by a task."""
    config = ChatSettings.current()
    if not config.receiving:
        return JsonResponse({"error": "chat approvals are not configured"}, status=404)
    body = request.body
    with translation.override(config.language):
        try:
            chat_interactions.verify(config.signing_secret, body, request.headers)
            press = chat_interactions.parse(body)
            if press is None:
                return JsonResponse({"ok": True})
            status, answer = chat_interactions.handle(press)
        except Refused as refused:
            return JsonResponse({"error": refused.message}, status=refused.status)
    return JsonResponse(answer, status=status)
