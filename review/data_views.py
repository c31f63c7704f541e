"""Decision data: every decided or expired escalation as JSONL (for evaluation and fine-tuning), and
per agent + operation approval rates (the seed of later policy suggestions).

Both read only. The export streams: rows are read in primary-key pages (review.presenters.EXPORT_CHUNK),
so memory stays flat however many decisions there are; under ASGI the response body is an async iterator
(uvicorn sends each page as it is read), under WSGI a plain one.
"""

from __future__ import annotations

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from agentops.accounts import roles
from review import presenters
from review.forms import DecisionFilterForm


@require_GET
@roles.section_required("queue")
def export_decisions(request: HttpRequest) -> HttpResponse:
    """Decided and expired escalations as JSONL, one object per line; ?agent=&since=&until= filter."""
    form = DecisionFilterForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in form.errors.items())
        return HttpResponseBadRequest(f"invalid filter: {errors}", content_type="text/plain; charset=utf-8")
    query = presenters.finished_escalations(form.cleaned_data, request.user)
    pages = presenters.aexport_pages(query) if isinstance(request, ASGIRequest) else presenters.export_pages(query)
    response = StreamingHttpResponse(pages, content_type="application/x-ndjson; charset=utf-8")
    name = presenters.export_filename(form.cleaned_data.get("agent"), timezone.now())
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@roles.section_required("queue")
def decision_stats(request: HttpRequest) -> HttpResponse:
    """Approval, modification and rejection rates and median decision time per agent + operation."""
    form = DecisionFilterForm(request.GET or None)
    valid = form.is_valid() if form.is_bound else True
    data = form.cleaned_data if form.is_bound and valid else {}
    rows = presenters.decision_stats_rows(data, request.user) if valid else []
    context = {
        "form": form,
        "rows": rows,
        "valid": valid,
        "filtered": bool(form.is_bound and any(data.values())),
        **presenters.stats_totals(rows),
        "export_url": presenters.export_url(request.GET.urlencode() if valid else ""),
    }
    return render(request, "review/stats.html", context, status=200 if valid else 400)
