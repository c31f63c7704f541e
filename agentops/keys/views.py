"""The Agents screen (`/agents/`, `/agents/<name>/`): superusers and agent admins set an agent's team, whether
it is enabled and its gateway tool review, and create, limit and revoke its API keys.

Views validate with agentops.keys.forms and change state only through the actions (agentops.runs.actions.agents,
agentops.keys.actions); display values come from agentops.keys.presenters. A new key is in the answer to the
POST that created it and nowhere else (no-store; never put in the session or a redirect). An htmx request on the
keys section gets the section alone (`detail.html#keys`), a plain form post the whole page.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from agentops.accounts import roles
from agentops.keys import actions as key_actions
from agentops.keys import presenters
from agentops.keys.forms import AgentForm, KeyLimitsForm, NewAgentForm, NewKeyForm
from agentops.keys.models import ApiKey
from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Agent

SECTION = "agents"


def _form_errors(form, exc: ValidationError) -> None:
    """Put an action's ValidationError on the form's fields (those it names) or on the form."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


# --- the list -----------------------------------------------------------------------------------------


def _list_page(request, form: NewAgentForm, status: int = 200) -> HttpResponse:
    rows = presenters.agent_rows(timezone.now())
    return render(request, "agentops/agents/list.html", {"rows": rows, "form": form}, status=status)


@roles.section_required(SECTION)
@require_http_methods(["GET", "POST"])
def agent_list(request):
    """`/agents/`: every agent; POST adds an external agent (one that only holds API keys)."""
    if request.method == "GET":
        return _list_page(request, NewAgentForm())
    form = NewAgentForm(request.POST)
    if not form.is_valid():
        return _list_page(request, form, status=422)
    agent = agent_actions.ensure_agent(form.cleaned_data["name"], team=form.cleaned_data["team"])
    messages.success(request, _("Agent %(name)s added: create its first key below.") % {"name": agent.name})
    return redirect("agents:detail", agent.name)


# --- one agent ----------------------------------------------------------------------------------------


def _keys_context(
    agent: Agent, *, new_key: str = "", new_row=None, new_form=None, bound=None, notice: str = ""
) -> dict:
    keys = presenters.agent_keys(agent)
    forms = {key.pk: KeyLimitsForm.of(key) for key in keys if key.revoked_at is None}
    if bound is not None:
        forms[bound[0]] = bound[1]
    return {
        "agent": agent,
        "keys": presenters.key_rows(keys, timezone.now(), forms),
        "new_key": new_key,
        "new_row": new_row,
        "key_form": new_form or NewKeyForm(),
        "notice": notice,  # an htmx answer's message (a whole page shows the session's messages instead)
    }


def _detail_page(request, agent: Agent, *, form: AgentForm | None = None, status: int = 200, **keys) -> HttpResponse:
    context = {"form": form or AgentForm.of(agent), **_keys_context(agent, **keys)}
    if request.htmx and not request.htmx.boosted and request.method == "POST" and form is None:
        response = render(request, "agentops/agents/detail.html#keys", context, status=status)
    else:
        response = render(request, "agentops/agents/detail.html", context, status=status)
    return response


@roles.section_required(SECTION)
@require_http_methods(["GET", "POST"])
def agent_detail(request, name: str):
    """`/agents/<name>/`: the agent's settings (POST saves them) and its keys."""
    agent = get_object_or_404(Agent, name=name)
    if request.method == "GET":
        return _detail_page(request, agent)
    form = AgentForm.of(agent, request.POST)
    if form.is_valid():
        try:
            key_actions.save_agent_settings(agent.name, **form.cleaned_data)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("Agent %(name)s saved.") % {"name": agent.name})
            return redirect("agents:detail", agent.name)
    return _detail_page(request, agent, form=form, status=422)


@roles.section_required(SECTION)
@require_POST
@never_cache  # no-store: the key is in this answer only, no cache may keep it
def key_create(request, name: str):
    """Create a key: shown once, in this answer."""
    agent = get_object_or_404(Agent, name=name)
    form = NewKeyForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            row, key = key_actions.create_api_key(
                agent.name,
                scopes=data["scopes"],
                name=data["name"],
                created_by=request.user.get_username(),
                **form.limits(),
            )
        except (ValidationError, ValueError) as exc:
            _form_errors(form, exc if isinstance(exc, ValidationError) else ValidationError(str(exc)))
        else:
            return _detail_page(request, agent, status=201, new_key=key, new_row=row)
    return _detail_page(request, agent, status=422, new_form=form)


def _key_or_404(agent: Agent, key_id: int) -> ApiKey:
    return get_object_or_404(ApiKey, pk=key_id, agent=agent)


@roles.section_required(SECTION)
@require_POST
def key_limits(request, name: str, key_id: int):
    """Save a key's limits (allowed models, expiry, requests a minute, requests in flight)."""
    agent = get_object_or_404(Agent, name=name)
    key = _key_or_404(agent, key_id)
    form = KeyLimitsForm.of(key, request.POST)
    if form.is_valid():
        try:
            key_actions.set_api_key_limits(key.pk, **form.limits())
        except ValidationError as exc:
            _form_errors(form, exc)
        except ValueError as exc:  # revoked meanwhile
            form.add_error(None, str(exc))
        else:
            return _done(request, agent, _("Key %(prefix)s… saved.") % {"prefix": key.prefix})
    return _detail_page(request, agent, status=422, bound=(key.pk, form))


@roles.section_required(SECTION)
@require_POST
def key_revoke(request, name: str, key_id: int):
    agent = get_object_or_404(Agent, name=name)
    key = _key_or_404(agent, key_id)
    if key_actions.revoke_api_key(key.pk):
        return _done(request, agent, _("Key %(prefix)s… revoked: it is refused from now on.") % {"prefix": key.prefix})
    return _done(request, agent, _("Key %(prefix)s… was already revoked.") % {"prefix": key.prefix})


def _done(request, agent: Agent, notice: str) -> HttpResponse:
    """After a key was changed: htmx gets the keys section with the notice, a plain post a redirect."""
    if request.htmx and not request.htmx.boosted:
        return _detail_page(request, agent, notice=notice)
    messages.success(request, notice)
    return redirect("agents:detail", agent.name)
