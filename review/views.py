"""Review pages: the live escalation queue and the approval screen (DESIGN §6, §9).

Every decision goes through review.actions (claim, release, decide, escalate_to_expert); these views only
validate, call the action and render what review.presenters makes of the escalation (agent-supplied text
is untrusted: see there).
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from agentops.accounts import roles
from review import actions, presenters
from review.actions import DecisionConflict
from review.bulk_presenters import assignment_context
from review.forms import (
    ACTION_LABELS,
    ACTIONS,
    ALL_QUEUES,
    APPROVE,
    ESCALATE,
    MODIFY,
    TAKE_OVER,
    DecisionForm,
    QueueFilterForm,
    SavedFilterForm,
)
from review.models import Escalation
from review.presenters import REFRESH_EVENT


def _check_queue_access(user, escalation: Escalation) -> None:
    if not Escalation.objects.visible_to(user).filter(pk=escalation.pk).exists():
        raise PermissionDenied(_("This escalation is in the expert queue."))


# --- the queue ---------------------------------------------------------------------------------
def _default_queue(user) -> str:
    if user.is_superuser:
        return ALL_QUEUES
    user_roles = roles.user_roles(user)
    if roles.EXPERT in user_roles:
        return ALL_QUEUES if roles.REVIEWER in user_roles else Escalation.Queue.EXPERTS
    return Escalation.Queue.REVIEWERS


def _queue_context(request) -> dict:
    user = request.user
    expert = roles.is_expert(user)
    if request.GET.get("queue") in (Escalation.Queue.EXPERTS, ALL_QUEUES) and not expert:
        raise PermissionDenied(_("Only experts open the expert queue."))
    form = QueueFilterForm(request.GET or None, expert=expert, user=user)
    filters = form.cleaned(_default_queue(user))
    if not form.is_bound:
        initial = {key: filters[key] for key in ("queue", "team", "sort")}
        form = QueueFilterForm(initial=initial, expert=expert, user=user)
    context = presenters.queue_context(user, filters, address_query=request.GET.urlencode())
    return {"form": form, "save_form": SavedFilterForm(initial={"query": context["query"]}), **context}


@roles.section_required("queue")
@require_GET
def queue(request):
    """`/review/`: one page of the open escalations (filters, search, sort and page in the query string),
    most urgent first, then oldest. htmx requests (filters, pages, live refreshes, reconnects) get the
    live region only; the back button's history restore gets the whole page."""
    context = _queue_context(request)
    if request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request:
        return render(request, "review/queue.html#live", context)
    return render(request, "review/queue.html", context)


# --- the approval screen -------------------------------------------------------------------------
def _detail_context(request, escalation: Escalation, *, form: DecisionForm | None = None, notice: str = "") -> dict:
    form = form if form is not None else presenters.decision_form(escalation)
    context = presenters.detail_context(escalation, request.user, form, notice=notice)
    return {**context, **assignment_context(escalation, request.user)}


def _escalation_or_404(pk: int) -> Escalation:
    return get_object_or_404(
        Escalation.objects.select_related("agent", "run", "run__agent", "claimed_by", "decided_by", "assigned_to"),
        pk=pk,
    )


@roles.section_required("queue")
@require_GET
def detail(request, pk: int):
    """`/review/<id>/`: everything the reviewer needs to decide, and the five actions. Opening it claims
    the item (a renewable lease) unless somebody else holds it."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    notice = ""
    if escalation.is_open:
        try:
            actions.claim(escalation.pk, request.user)
        except DecisionConflict as exc:
            notice = str(exc)
        escalation = _escalation_or_404(pk)
    return render(request, "review/detail.html", _detail_context(request, escalation, notice=notice))


@roles.section_required("queue")
@require_GET
def detail_live(request, pk: int):
    """The status and the audit log of one escalation, re-read when the queue changes and on reconnect.
    The decision form is never re-rendered here: it keeps what the reviewer typed."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    return render(request, "review/detail.html#live", _detail_context(request, escalation))


@roles.section_required("queue")
@require_POST
def claim(request, pk: int):
    """Claim the item, or renew one's own lease (the page does that every four minutes). Answers the
    status and, out of band, the new `lease` the page's leaving beacon names."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    status = 200
    notice = ""
    try:
        actions.claim(pk, request.user)
    except DecisionConflict as exc:
        notice, status = str(exc), 409
    escalation = _escalation_or_404(pk)
    if not request.htmx:
        if notice:
            messages.error(request, notice)
        return redirect("review:detail", pk=pk)
    context = {**_detail_context(request, escalation), "claim_notice": notice, "claimed_now": status == 200}
    return render(request, "review/detail.html#claimed", context, status=status)


@roles.section_required("queue")
@require_POST
def release(request, pk: int):
    """Give the item back to the queue and go back there. The page also sends this as a beacon when the
    reviewer leaves it (`beacon=1` with the lease the page holds): then only a claim that nothing
    renewed since is released, so a reload of the page, which claims again, keeps the item."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    if request.POST.get("beacon"):
        actions.release(pk, request.user, lease=request.POST.get("lease", ""))
        return HttpResponse(status=204)
    escalation = actions.release(pk, request.user)
    if escalation.state == Escalation.State.PENDING:
        messages.info(request, _("Released escalation %(pk)s: it is back in the queue.") % {"pk": pk})
    return _to_queue(request)


def _to_queue(request) -> HttpResponse:
    if request.htmx:
        return HttpResponseClientRedirect(reverse("review:queue"))
    return redirect("review:queue")


def _apply(request, escalation: Escalation, form: DecisionForm) -> Escalation:
    """Carry out a valid decision through review.actions (raises DecisionConflict)."""
    data = form.cleaned_data
    action = data["action"]
    if action == ESCALATE:
        # escalate_to_expert takes no version: refuse here what the reviewer did not see
        if escalation.version != data["version"] and escalation.is_open:
            raise DecisionConflict(
                _("Already escalated to the expert queue.")
                if escalation.queue == Escalation.Queue.EXPERTS
                else _("This item changed meanwhile; reload it to see its current state.")
            )
        return actions.escalate_to_expert(escalation.pk, request.user, comment=data["comment"])
    return actions.decide(
        escalation.pk,
        request.user,
        ACTIONS[action],
        arguments=data.get("parsed_arguments") if action == MODIFY else None,
        result=data.get("parsed_result") if action == TAKE_OVER else None,
        comment=data["comment"],
        confidence=data["confidence"],
        version=data["version"],
    )


@roles.section_required("queue")
@require_POST
def decide(request, pk: int):
    """Approve, modify, take over, escalate or reject — accepted exactly once. A refused decision
    (someone else decided or holds the item, or it changed) answers 409 with the reason and the form as
    the reviewer filled it; an invalid one 422. From the queue (`source=queue`) the answer is a notice."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    from_queue = request.POST.get("source") == "queue"
    form = DecisionForm(request.POST)
    if form.is_valid() and escalation.kind == "llm":
        # an LLM call has no arguments to modify; only a gateway call a budget blocked has something to approve
        action = form.cleaned_data["action"]
        if action == MODIFY or (action == APPROVE and not escalation.approvable):
            form.add_error(None, _("There is no proposed action to approve: take over (write the answer) or reject."))
        elif action == TAKE_OVER:
            form.cleaned_data["parsed_result"] = form.cleaned_data["result"].strip()  # the answer is text
    if not form.is_valid():
        return _refused(request, escalation, form, status=422, from_queue=from_queue)
    try:
        _apply(request, escalation, form)
    except DecisionConflict as exc:
        return _refused(request, _escalation_or_404(pk), form, status=409, from_queue=from_queue, notice=str(exc))
    action = form.cleaned_data["action"]
    if action != ESCALATE and escalation.run_id:
        message = _("%(action)s: escalation %(pk)s; run %(run)s resumes.") % {
            "action": ACTION_LABELS[action],
            "pk": pk,
            "run": escalation.run_id,
        }
    else:
        message = _("%(action)s: escalation %(pk)s.") % {"action": ACTION_LABELS[action], "pk": pk}
    if from_queue:
        response = render(request, "review/queue.html#notice", {"notice": message, "notice_ok": True})
        return trigger_client_event(response, REFRESH_EVENT)
    messages.success(request, message)
    return _to_queue(request)


def _refused(request, escalation, form, *, status: int, from_queue: bool, notice: str = "") -> HttpResponse:
    if from_queue:
        if not notice:
            notice = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        response = render(request, "review/queue.html#notice", {"notice": notice, "notice_ok": False}, status=status)
        return trigger_client_event(response, REFRESH_EVENT)
    context = _detail_context(request, escalation, form=form, notice=notice)
    if request.htmx:
        response = render(request, "review/detail.html#decision", context, status=status)
        return trigger_client_event(response, REFRESH_EVENT) if status == 409 else response
    return render(request, "review/detail.html", context, status=status)
