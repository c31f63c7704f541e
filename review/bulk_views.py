"""Bulk approve / reject of selected queue rows, and "assign to me / to a reviewer" (issue 18, item 3).

A bulk decision takes two requests: ``bulk/confirm`` answers what would happen (the confirmation, decides
nothing) and ``bulk/decide`` decides through review.bulk, each item once with the version the reviewer saw.
Without JavaScript the confirmation is a page of its own; with htmx it is a dialog and the report replaces the
queue's notice.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from agentops.accounts import roles
from review import actions, bulk
from review.actions import AssignmentRefused, DecisionConflict
from review.bulk_presenters import bulk_preview, bulk_report
from review.forms import ASSIGN_ME, BULK_ACTIONS, AssignForm, BulkDecisionForm
from review.models import Escalation
from review.presenters import REFRESH_EVENT

BULK_DONE_EVENT = "review:bulk-done"  # the page clears its selection


def _form_errors(form) -> list[str]:
    return [str(error) for errors in form.errors.values() for error in errors]


def _valid_bulk(request) -> tuple[BulkDecisionForm, list[str]]:
    form = BulkDecisionForm(request.POST)
    if not form.is_valid():
        return form, _form_errors(form)
    try:
        bulk.check_size(len(form.cleaned_data["picks"]))
    except bulk.TooManyItems as exc:
        return form, [str(exc)]
    return form, []


@roles.section_required("queue")
@require_POST
def bulk_confirm(request):
    """What approving / rejecting the selected rows would do: how many, which operations, what is skipped
    (nothing to approve, claimed by someone else, changed, not in the queue). Decides nothing."""
    form, errors = _valid_bulk(request)
    if errors:
        context, status = {"errors": errors}, 422
    else:
        data = form.cleaned_data
        context, status = {"preview": bulk_preview(request.user, data["picks"], data["action"])}, 200
    if request.htmx:
        return render(request, "review/_bulk.html#confirm", context, status=status)
    return render(request, "review/bulk_confirm.html", context, status=status)


@roles.section_required("queue")
@require_POST
def bulk_decide(request):
    """Decide the confirmed items, each once (review.bulk), and report "10 approved, 2 skipped: …"."""
    form, errors = _valid_bulk(request)
    if errors:
        report = {"ok": False, "summary": " ".join(errors), "skipped": [], "more_skipped": 0}
        if request.htmx:
            return render(request, "review/_bulk.html#report", {"report": report}, status=422)
        messages.error(request, report["summary"])
        return redirect("review:queue")
    data = form.cleaned_data
    outcome = bulk.bulk_decide(request.user, data["picks"], BULK_ACTIONS[data["action"]], comment=data["comment"])
    report = bulk_report(outcome)
    if request.htmx:
        response = render(request, "review/_bulk.html#report", {"report": report})
        return trigger_client_event(trigger_client_event(response, REFRESH_EVENT), BULK_DONE_EVENT)
    text = " ".join([report.summary, *(f"#{pk} {why}" for pk, why in report.skipped)])
    (messages.success if report.ok else messages.error)(request, text)
    return redirect("review:queue")


# --- assignment ----------------------------------------------------------------------------------
def _assignee(request, value: str):
    if value == ASSIGN_ME:
        return request.user
    if not value:
        return None
    person = get_user_model().objects.filter(pk=int(value)).first()
    if person is None:
        raise AssignmentRefused(_("Choose a reviewer from the list."))
    return person


@roles.section_required("queue")
@require_POST
def assign(request, pk: int):
    """Assign the item to the signed-in reviewer (``assignee=me``), to a reviewer (their id) or to nobody.
    From a queue row (``source=queue``) the answer is the queue's notice, from the approval screen its own."""
    get_object_or_404(Escalation.objects.only("pk"), pk=pk)
    if not Escalation.objects.visible_to(request.user).filter(pk=pk).exists():
        raise PermissionDenied(_("This escalation is in the expert queue."))
    from_queue = request.POST.get("source") == "queue"
    form = AssignForm(request.POST)
    status, ok = 200, True
    try:
        if not form.is_valid():
            raise AssignmentRefused(" ".join(_form_errors(form)))
        assignee = _assignee(request, form.cleaned_data["assignee"])
        actions.assign(pk, request.user, assignee)
    except AssignmentRefused as exc:
        notice, status, ok = str(exc), 422, False
    except DecisionConflict as exc:
        notice, status, ok = str(exc), 409, False
    else:
        if assignee is None:
            notice = _("Escalation %(pk)s: nobody is assigned now.") % {"pk": pk}
        else:
            notice = _("Escalation %(pk)s is assigned to %(user)s.") % {"pk": pk, "user": assignee.get_username()}
    if not request.htmx:
        (messages.success if ok else messages.error)(request, notice)
        return redirect("review:queue") if from_queue else redirect("review:detail", pk=pk)
    if from_queue:
        response = render(request, "review/queue.html#notice", {"notice": notice, "notice_ok": ok}, status=status)
    else:
        response = render(
            request, "review/_assign.html#notice", {"assign_notice": notice, "assign_ok": ok}, status=status
        )
    return trigger_client_event(response, REFRESH_EVENT) if ok else response
