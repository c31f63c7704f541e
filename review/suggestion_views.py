"""`/review/suggestions/`: policy suggestions from decision history, applied, undone or dismissed in one click.

Who: people who may edit escalation policies — Django's ``review.change_escalationpolicy`` permission, the
same right that edits the rows in the admin (superusers hold it; an operator may grant it to a group). A
reviewer decides items but does not change what needs a human, so the page is 403 to them.
Every change goes through review.policy_actions, which re-checks the suggestion when the button is pressed.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from review import policy_actions, suggestion_presenters, suggestions
from review.models import PolicyChange
from review.suggestion_forms import SuggestionForm

PERMISSION = "review.change_escalationpolicy"
SHOWN = 50  # suggestions listed at once


def may_edit_policies(user) -> bool:
    return user.is_authenticated and user.is_active and user.has_perm(PERMISSION)


def _policy_editor(view):
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not may_edit_policies(request.user):
            raise PermissionDenied(_("Only people who may edit escalation policies open the suggestions."))
        return view(request, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = view.__name__, view.__doc__
    return wrapper


@_policy_editor
@require_GET
def suggestions_page(request):
    """The standing suggestions with their evidence, and the latest applied ones with their undo buttons."""
    thresholds = suggestions.Thresholds.from_settings()
    found = suggestions.find(thresholds)
    # The strongest evidence first; a page of a few hundred suggestions helps nobody (and costs seconds).
    shown = sorted(found, key=lambda f: -f.evidence.decisions)[:SHOWN]
    context = {
        "suggestions": suggestion_presenters.suggestion_views(shown),
        "total": len(found),
        "changes": suggestion_presenters.applied_changes(),
        "thresholds": thresholds,
    }
    return render(request, "review/suggestions.html", context)


def _suggestion_post(request, act) -> tuple[bool, object]:
    """Validate the button's form and call ``act``; a refusal becomes a message. (done, what act returned)"""
    form = SuggestionForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.error_text())
        return False, None
    data = form.cleaned_data
    try:
        result = act(
            data["agent"],
            data["operation"],
            data["kind"],
            request.user,
            below=data["below"],
            decisions=data["decisions"],
        )
    except policy_actions.SuggestionChanged as exc:
        messages.error(request, str(exc))
        return False, None
    return True, result


@_policy_editor
@require_POST
def apply(request):
    """One click: the policy row for the suggestion's agent + operation decides as suggested (audited)."""
    done, change = _suggestion_post(request, policy_actions.apply_suggestion)
    if done:
        below = (change.evidence or {}).get("below")
        title = suggestion_presenters.suggestion_title(change.suggestion, change.operation, change.agent_name, below)
        messages.success(
            request, _("Applied: %(suggestion)s. Undo it below if it was a mistake.") % {"suggestion": title}
        )
    return redirect("review:suggestions")


@_policy_editor
@require_POST
def dismiss(request):
    """One click: hide the suggestion until new evidence (REVIEW_SUGGEST_RECENT more decisions)."""
    if _suggestion_post(request, policy_actions.dismiss)[0]:
        messages.success(request, _("Dismissed. It comes back only if new decisions keep supporting it."))
    return redirect("review:suggestions")


@_policy_editor
@require_http_methods(["GET", "POST"])
def undo(request, pk: int):
    """GET: what undoing would put back (a confirmation); POST: undo it (audited)."""
    change = get_object_or_404(PolicyChange.objects.select_related("actor"), pk=pk, kind=PolicyChange.Kind.APPLIED)
    if request.method == "POST":
        try:
            policy_actions.undo(change.pk, request.user)
        except policy_actions.UndoRefused as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, _("Undone: the policy row is back as it was before."))
        return redirect("review:suggestions")
    undone = PolicyChange.objects.filter(undoes=change).select_related("actor").first()
    context = {"change": suggestion_presenters.change_view(change, undone)}
    return render(request, "review/suggestion_undo.html", context)
