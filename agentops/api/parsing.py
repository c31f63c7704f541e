from __future__ import annotations

import structlog
from django.http import HttpRequest
from ninja.parser import Parser

from agentops.lib import jsonbody

log = structlog.get_logger(__name__)


class ApiParser(Parser):
    """Bodies through agentops/lib/jsonbody.py: nesting is bounded and no text PostgreSQL cannot store gets in,
    whatever field (declared or free-form) it sits in. Ninja turns a parse error into ``HttpError(400)``
    with our ``BodyProblem`` as its cause; ``_http_error`` answers it."""

    def parse_body(self, request: HttpRequest):
        return jsonbody.loads(request.body)
