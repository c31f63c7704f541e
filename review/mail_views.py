"""Pages of the e-mail channel: the page a mail's Approve / Reject link opens, and the reviewer's notification
settings (/review/settings/).

A link's GET only shows what will happen (mail scanners and previews fetch links); the button on it POSTs (CSRF
on our own page) and decides through review.mail_actions.decide_by_link → review.actions.decide(channel="email").
The link is the credential: no sign-in is needed, review/channels/links.py checks whom it names.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from agentops.accounts import roles
from review import mail_actions, presenters
from review.actions import DecisionConflict
from review.channels import email as email_channel
from review.channels import links
from review.models import Escalation, ReviewerProfile
from review.profile_forms import ReviewerSettingsForm


def _link_page(request, verdict: links.Verdict, *, step: str, status: int = 200, notice: str = ""):
    escalation = verdict.escalation
    context = {"step": step, "verdict": verdict, "notice": notice}
    if escalation is not None:
        context.update(
            esc=escalation,
            approve=verdict.link is not None and verdict.link.decision == Escalation.Decision.APPROVED,
            decision_word=links.DECISION_WORDS.get(verdict.link.decision, "") if verdict.link else "",
            agent=presenters.reveal(escalation.agent.name if escalation.agent_id else "—"),
            operation=presenters.reveal(escalation.operation),
            arguments=presenters.pretty(escalation.arguments),
            reviewer=verdict.user.get_username() if verdict.user else "",
            deadline=links.when(escalation.deadline_at),
            screen_url=reverse("review:detail", args=[escalation.pk]),
        )
    response = render(request, "review/mail_link.html", context, status=status)
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@never_cache
@require_http_methods(["GET", "POST"])
def mail_link(request):
    """`/review/mail/?t=<token>`: GET shows the one-click confirmation (or why the link cannot decide); POST decides.
    The token rides in the query string, not the path: request logs and spans record the path only, and the token
    is a credential."""
    token = request.GET.get("t", "")
    verdict = links.check(token)
    if not verdict.ok:
        return _link_page(request, verdict, step="refused", status=verdict.status)
    if request.method == "GET":
        return _link_page(request, verdict, step="confirm")
    link = verdict.link
    try:
        mail_actions.decide_by_link(
            nonce=link.nonce,
            escalation_pk=link.escalation_pk,
            user=verdict.user,
            decision=link.decision,
            version=link.version,
        )
    except (mail_actions.LinkUsed, DecisionConflict) as exc:
        # someone (or this link, pressed twice) was faster: say what happened, as a fresh look sees it
        again = links.check(token)
        if not again.ok:
            return _link_page(request, again, step="refused", status=again.status)
        return _link_page(request, verdict, step="refused", status=409, notice=str(exc))
    verdict.escalation = Escalation.objects.select_related("agent", "decided_by").get(pk=link.escalation_pk)
    return _link_page(request, verdict, step="done")


# --- the reviewer's notification settings ------------------------------------------------------------------
@roles.section_required("queue")
@require_http_methods(["GET", "POST"])
def reviewer_settings(request):
    """`/review/settings/`: e-mail opt-in, priorities, reminders, language, chat user id; teams read-only."""
    profile = ReviewerProfile.objects.filter(user=request.user).first()
    if request.method == "POST":
        form = ReviewerSettingsForm(request.POST, user=request.user)
        if form.is_valid():
            mail_actions.save_reviewer_settings(request.user, **form.settings_values())
            messages.success(request, _("Your notification settings are saved."))
            return redirect("review:settings")
        status = 422
    else:
        form = ReviewerSettingsForm(initial=ReviewerSettingsForm.initial_for(request.user, profile), user=request.user)
        status = 200
    context = {
        "form": form,
        "teams": profile.team_list() if profile else [],
        "email_enabled": settings.REVIEW_EMAIL_ENABLED,
        "active": "settings",
    }
    return render(request, "review/settings.html", context, status=status)


@roles.section_required("queue")
@require_POST
def send_test_mail(request):
    """Send the signed-in reviewer a test mail to the address they saved."""
    if not settings.REVIEW_EMAIL_ENABLED:
        messages.error(request, _("This deployment has no mail server (EMAIL_HOST is unset): no mail can be sent."))
    elif not request.user.email:
        messages.error(request, _("Save an e-mail address first."))
    else:
        try:
            email_channel.send_test_mail(request.user)
        except email_channel.MAIL_ERRORS as exc:
            messages.error(request, _("The mail server refused the test mail: %(error)s") % {"error": str(exc)[:200]})
        else:
            messages.success(request, _("A test mail is on its way to %(address)s.") % {"address": request.user.email})
    return redirect("review:settings")
