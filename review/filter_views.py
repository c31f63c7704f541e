"""Saving and deleting a reviewer's named queue views (review.saved_filters does the writing)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from agentops.accounts import roles
from review import saved_filters
from review.forms import SavedFilterForm


def _queue_at(query: str):
    url = reverse("review:queue")
    return redirect(f"{url}?{query}" if query else url)


@roles.section_required("queue")
@require_POST
def save_filter(request):
    """Save the view the reviewer is looking at under a name, then show it (with the name in the list)."""
    form = SavedFilterForm(request.POST)
    query = saved_filters.clean_query(request.POST.get("query", "")[:2000])
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return _queue_at(query)
    try:
        saved = saved_filters.save_filter(request.user, form.cleaned_data["name"], form.cleaned_data["query"])
    except ValidationError as exc:
        for error in exc.messages:
            messages.error(request, error)
        return _queue_at(query)
    messages.success(request, _("Saved this view as “%(name)s”.") % {"name": saved.name})
    return _queue_at(saved.query)


@roles.section_required("queue")
@require_POST
def delete_filter(request, pk: int):
    if not saved_filters.delete_filter(request.user, pk):
        raise Http404("No such saved view.")
    messages.info(request, _("Deleted the saved view."))
    return _queue_at(saved_filters.clean_query(request.POST.get("query", "")[:2000]))
