"""Usage, reservations and budgets over the REST API (DESIGN.md §7, §8), and — with the ``admin`` scope —
budgets and prices as code.

The key's agent is the caller: usage is recorded for it, reservations are held for it, and another agent's
reservation answers 404 like a missing one. Every write goes through budgets/actions/; budget and price
changes are validated by the admin screens' own forms (BudgetForm, PriceForm) and then by the model's
``full_clean`` inside the action. Amounts of money go out as decimal strings.

Conflicts: creating (or renaming to) a budget name that exists answers 409 ``conflict`` (details name the
field), as does a second price for the same model and ``effective_from`` and deleting a price that was
already charged. ``PUT /admin/budgets/{id}`` changes only the fields it is sent.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone
from ninja import Path, Query, Router

from agentops.api.errors import ApiError, not_found
from agentops.api.schemas import MAX_ID, Text, responses
from agentops.api.scopes import require
from agentops.lib import activity
from agentops.lib.display import plain_decimal
from agentops.runs.models import Run
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable
from budgets import model_limits
from budgets.actions import budgets as budget_actions
from budgets.actions import directory, ledger, periods, prices, reservations
from budgets.actions.call_counts import call_counts
from budgets.actions.counters import fail_closed
from budgets.forms import BudgetForm, PriceForm
from budgets.models import Budget, BudgetCounter, ModelPrice, Reservation
from budgets.schemas import (
    BudgetChange,
    BudgetIn,
    BudgetList,
    BudgetOut,
    BudgetsOut,
    PriceIn,
    PriceList,
    PriceOut,
    ReleaseOut,
    ReservationIn,
    ReservationOut,
    SettleIn,
    SettleOut,
    UsageIn,
    UsageOut,
)

router = Router(tags=["budgets"])

STORE_DOWN = (OperationalError, InterfaceError)


# --- helpers -----------------------------------------------------------------------------------------


def _unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, "budget_unavailable", str(exc) or "the budget store is unreachable; nothing was admitted")


def _out_of_range() -> ApiError:
    # Token counts are bounded by the schemas; an admin's price times them can still overflow a money column.
    return ApiError(422, "invalid", "the cost of this call is out of range for the ledger", {"errors": []})


def _invalid(field: str, message: str, kind: str = "value_error") -> ApiError:
    error = {"loc": ["body", field], "msg": message, "type": kind}
    return ApiError(422, "invalid", message, {"errors": [error], "fields": {field: [message]}})


def _remaining(caller: directory.Caller, now: dt.datetime | None = None) -> list[dict]:
    """What is left of every enabled budget that applies to the caller, in its current period."""
    now = now or timezone.now()
    keys = [
        (budget, subject, periods.period_start(budget, now)) for budget, subject in directory.applicable_budgets(caller)
    ]
    if not keys:
        return []
    match = Q()
    for budget, subject, start in keys:
        match |= Q(budget_id=budget.pk, subject=subject, period_start=start)
    counters = {(c.budget_id, c.subject): c for c in BudgetCounter.objects.filter(match)}
    items = []
    for budget, subject, _start in keys:
        counter = counters.get((budget.pk, subject))
        spent_tokens = counter.spent_tokens if counter else 0
        spent_usd = counter.spent_usd if counter else Decimal(0)
        reserved_tokens = counter.reserved_tokens if counter else 0
        reserved_usd = counter.reserved_usd if counter else Decimal(0)
        remaining_tokens = remaining_usd = None
        if budget.limit_tokens is not None:
            remaining_tokens = max(budget.limit_tokens - spent_tokens - reserved_tokens, 0)
        if budget.limit_usd is not None:
            remaining_usd = max(budget.limit_usd - spent_usd - reserved_usd, Decimal(0))
        items.append(
            {
                "budget": budget.name,
                "scope": budget.scope,
                # the caller's own session (the counter is keyed by agent and session; the agent is the caller)
                "subject": caller.session_id if budget.scope == Budget.Scope.SESSION else subject,
                "period": budget.period,
                "period_end": periods.period_end(budget, now),
                "limit_tokens": budget.limit_tokens,
                "limit_usd": plain_decimal(budget.limit_usd),
                "spent_tokens": spent_tokens,
                "spent_usd": plain_decimal(spent_usd),
                "reserved_tokens": reserved_tokens,
                "reserved_usd": plain_decimal(reserved_usd),
                "remaining_tokens": remaining_tokens,
                "remaining_usd": plain_decimal(remaining_usd),
                "hard_stop": budget.hard_stop,
            }
        )
    return items


def _own_reservation(principal, reservation_id: int) -> Reservation:
    """The caller's reservation; another agent's answers exactly like a missing one."""
    reservation = Reservation.objects.filter(pk=reservation_id, agent=principal.agent[:80]).first()
    if reservation is None:
        raise not_found("reservation")
    return reservation


def _check_cached(cached: int, input_tokens: int) -> None:
    if cached > input_tokens:
        raise _invalid("cached_tokens", f"cached_tokens ({cached}) cannot exceed input_tokens ({input_tokens})")


def _check_reported(model: str, input_tokens: int, output_tokens: int) -> None:
    """Refuse self-reported usage that no call of the model could produce (it would be charged to shared
    budgets): 422 naming the field and the limit."""
    excess = model_limits.excess(model, input_tokens, output_tokens)
    if excess is not None:
        field, limit, message = excess
        error = _invalid(field, message)
        error.details["limit"] = limit
        raise error


# --- usage, reservations, remaining budgets ----------------------------------------------------------


@router.post("/usage", response=responses({201: UsageOut}, 503), summary="Report the tokens of a call")
def record_usage(request, payload: UsageIn):
    """Record a call that held no reservation (usage reported after the fact): priced at the model's price in
    force now, added to the spend of every budget that applies, always for the key's own agent. Answers the
    cost and what is left. A report beyond what one call of the model can use (its context window and output
    limit, else AGENTOPS_USAGE_REPORT_MAX_TOKENS in total) is 422; another agent's ``run_id`` 404."""
    principal = require(request, "usage")
    activity.touch(principal.agent, payload.session_id)  # agent_active_sessions counts reported usage too
    _check_cached(payload.cached_tokens, payload.input_tokens)
    _check_reported(payload.model, payload.input_tokens, payload.output_tokens)
    # Another agent's run answers like a missing one: a report is only ever charged to the key's agent.
    if payload.run_id is not None and not Run.objects.filter(pk=payload.run_id, agent_id=principal.agent_id).exists():
        raise not_found("run")
    usage = {
        "agent": principal.agent,
        "session_id": payload.session_id,
        "run_id": payload.run_id,
        "model": payload.model,
        "operation": payload.operation,
        "input_tokens": payload.input_tokens,
        "output_tokens": payload.output_tokens,
        "cached_tokens": payload.cached_tokens,
        "source": "api",
    }
    try:
        record = ledger.record_usage(usage)
        remaining = _remaining(directory.Caller(agent=principal.agent, session_id=payload.session_id))
    except BudgetUnavailable as exc:
        raise _unavailable(exc) from exc
    except STORE_DOWN as exc:
        raise _unavailable(fail_closed(exc)) from exc
    except DataError as exc:
        raise _out_of_range() from exc
    call_counts().count("success")  # a reported call counts in the error-rate alert like a run's or the gateway's
    return 201, {"id": record.pk, "cost_usd": plain_decimal(record.cost_usd), "remaining": remaining}


@router.post(
    "/reservations", response=responses({201: ReservationOut}, 402, 503), summary="Reserve budget before a call"
)
def reserve(request, payload: ReservationIn):
    """Hold the estimate against every budget that applies, all or nothing. 402 ``budget_exceeded`` names
    the budget that refuses and what is left (``details.cheaper_model``: a model its policy allows instead);
    503 ``budget_unavailable`` when the budget store cannot be reached (nothing is admitted unchecked)."""
    principal = require(request, "usage")
    activity.touch(principal.agent, payload.session_id)
    meta = {
        "agent": principal.agent,
        "session_id": payload.session_id,
        "model": payload.model,
        "operation": payload.operation,
        "estimated_input_tokens": payload.estimated_input_tokens,
        "estimated_output_tokens": payload.estimated_output_tokens,
    }
    now = timezone.now()
    try:
        reservation_id = reservations.reserve(meta, lease_seconds=payload.lease_seconds, now=now)
        if reservation_id is None:
            price = prices.price_in_force(payload.model, now)
            usd = prices.cost_of(price, payload.estimated_input_tokens, payload.estimated_output_tokens)
            tokens = payload.estimated_input_tokens + payload.estimated_output_tokens
            return 201, {
                "id": None,
                "expires_at": None,
                "tokens": tokens,
                "usd": plain_decimal(usd),
                "note": "no budget applies",
            }
        row = Reservation.objects.get(pk=reservation_id)
    except BudgetExceeded as exc:
        raise ApiError(
            402, "budget_exceeded", exc.message, {"budget": exc.budget, "cheaper_model": exc.cheaper_model}
        ) from exc
    except BudgetUnavailable as exc:
        raise _unavailable(exc) from exc
    except STORE_DOWN as exc:
        raise _unavailable(fail_closed(exc)) from exc
    except DataError as exc:
        raise _out_of_range() from exc
    return 201, {"id": row.pk, "expires_at": row.expires_at, "tokens": row.tokens, "usd": plain_decimal(row.usd)}


@router.post(
    "/reservations/{reservation_id}/settle",
    response=responses({200: SettleOut}, 503),
    summary="Settle a reservation with the actual usage",
)
def settle(request, payload: SettleIn, reservation_id: int = Path(..., ge=1, le=MAX_ID)):
    """Swap the estimate for the actual usage and write the priced ledger row. Settling again returns the
    first settle's usage and counts nothing twice; a reservation released or expired meanwhile still records
    its spend (the call did happen)."""
    principal = require(request, "usage")
    _check_cached(payload.cached_tokens, payload.input_tokens)
    try:
        reservation = _own_reservation(principal, reservation_id)
        _check_reported(payload.model or reservation.model, payload.input_tokens, payload.output_tokens)
        usage = {
            "input_tokens": payload.input_tokens,
            "output_tokens": payload.output_tokens,
            "cached_tokens": payload.cached_tokens,
            "model": payload.model or reservation.model,
            "source": "api",
        }
        record = ledger.settle(reservation.pk, usage)
        activity.touch(principal.agent, reservation.session_id)
        remaining = _remaining(directory.Caller(agent=principal.agent, session_id=reservation.session_id))
    except BudgetUnavailable as exc:
        raise _unavailable(exc) from exc
    except STORE_DOWN as exc:
        raise _unavailable(fail_closed(exc)) from exc
    except DataError as exc:
        raise _out_of_range() from exc
    return {"usage_id": record.pk, "cost_usd": plain_decimal(record.cost_usd), "remaining": remaining}


@router.post(
    "/reservations/{reservation_id}/release",
    response=responses({200: ReleaseOut}, 503),
    summary="Give a reservation back (the call failed or never happened)",
)
def release(request, reservation_id: int = Path(..., ge=1, le=MAX_ID)):
    principal = require(request, "usage")
    try:
        reservation = _own_reservation(principal, reservation_id)
        released = reservations.release(reservation.pk)
    except BudgetUnavailable as exc:
        raise _unavailable(exc) from exc
    except STORE_DOWN as exc:
        raise _unavailable(fail_closed(exc)) from exc
    return {"released": released}


@router.get("/budgets", response=responses({200: BudgetsOut}, 503), summary="What is left of the budgets")
def remaining_budgets(request, session_id: Text = Query("", max_length=200)):
    """Every enabled budget that applies to this agent (session budgets: pass ``session_id``), with its
    current period's spend, holds and what is left."""
    principal = require(request, "budgets:read")
    try:
        return {"items": _remaining(directory.Caller(agent=principal.agent, session_id=session_id))}
    except STORE_DOWN as exc:
        raise _unavailable(fail_closed(exc)) from exc


# --- budgets as code (admin) -------------------------------------------------------------------------

BUDGET_FIELDS = BudgetForm.Meta.fields  # the API edits exactly what the screen does


def budget_out(budget: Budget) -> dict:
    return {
        "id": budget.pk,
        **{name: getattr(budget, name) for name in BUDGET_FIELDS},
        "limit_usd": plain_decimal(budget.limit_usd),
        "created_at": budget.created_at,
        "updated_at": budget.updated_at,
    }


def _form_problems(errors: dict[str, list], what: str = "budget") -> ApiError:
    """Form (or model) errors as one 422 with every problem by field."""
    fields = {name: [str(message) for message in messages] for name, messages in errors.items()}
    listed = [
        {"loc": ["body"] if name == "__all__" else ["body", name], "msg": message, "type": "value_error"}
        for name, messages in fields.items()
        for message in messages
    ]
    details = {"errors": listed, "fields": fields}
    first = listed[0]["msg"] if listed else "invalid"
    return ApiError(422, "invalid", f"the {what} did not pass validation: {first}", details)


def _save_budget(data: dict, budget: Budget | None) -> Budget:
    """Validate ``data`` exactly like the budget screen (BudgetForm), then save through the action."""
    form_data = {
        **data,
        "operation_limits": json.dumps(data["operation_limits"]) if data["operation_limits"] else "",
        "limit_tokens": "" if data["limit_tokens"] is None else data["limit_tokens"],
        "limit_usd": "" if data["limit_usd"] is None else data["limit_usd"],
    }
    form = BudgetForm(data=form_data, instance=budget)
    if not form.is_valid():
        errors = form.errors.as_data()
        duplicate = [e for e in errors.get("name", []) if e.code == "unique"]
        if duplicate and set(errors) == {"name"} and len(errors["name"]) == len(duplicate):
            raise _name_taken(data["name"])
        raise _form_problems({name: [m for e in errs for m in e.messages] for name, errs in errors.items()})
    try:
        saved = budget_actions.save_budget(form.save(commit=False))
    except DjangoValidationError as exc:  # changed meanwhile
        raise _form_problems(exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}) from exc
    except IntegrityError as exc:  # the same name saved by someone else meanwhile
        raise _name_taken(data["name"]) from exc
    saved.refresh_from_db()  # the stored values (decimals as the column rounds them)
    return saved


def _name_taken(name: str) -> ApiError:
    return ApiError(
        409,
        "conflict",
        f"a budget named {name!r} already exists: pick another name, or change that one with PUT",
        {"field": "name", "name": name},
    )


def _budget_or_404(budget_id: int) -> Budget:
    budget = Budget.objects.filter(pk=budget_id).first()
    if budget is None:
        raise not_found("budget")
    return budget


@router.get("/admin/budgets", response=responses({200: BudgetList}), summary="Every budget (admin)")
def list_budgets(request):
    require(request, "admin")
    items = [budget_out(b) for b in Budget.objects.order_by("id")]
    return {"items": items, "count": len(items)}


@router.post("/admin/budgets", response=responses({201: BudgetOut}, 409), summary="Create a budget (admin)")
def create_budget(request, payload: BudgetIn):
    """Validated like the budget screen; a name already taken answers 409 ``conflict``."""
    require(request, "admin")
    data = payload.dict()
    if data["timezone"] is None:
        data["timezone"] = settings.BUDGET_TIMEZONE
    return 201, budget_out(_save_budget(data, None))


@router.get("/admin/budgets/{budget_id}", response=responses({200: BudgetOut}), summary="One budget (admin)")
def get_budget(request, budget_id: int = Path(..., ge=1, le=MAX_ID)):
    require(request, "admin")
    return budget_out(_budget_or_404(budget_id))


@router.put("/admin/budgets/{budget_id}", response=responses({200: BudgetOut}, 409), summary="Change a budget (admin)")
def update_budget(request, payload: BudgetChange, budget_id: int = Path(..., ge=1, le=MAX_ID)):
    """Changes only the fields sent (``null`` clears a limit); validated like the budget screen."""
    require(request, "admin")
    budget = _budget_or_404(budget_id)
    data = {name: getattr(budget, name) for name in BUDGET_FIELDS}
    sent = payload.dict(exclude_unset=True)
    for name, value in sent.items():
        if value is None and name not in ("limit_tokens", "limit_usd"):
            raise _invalid(name, f"{name} cannot be null")
    data.update(sent)
    return budget_out(_save_budget(data, budget))


@router.delete("/admin/budgets/{budget_id}", response=responses({204: None}), summary="Delete a budget (admin)")
def delete_budget(request, budget_id: int = Path(..., ge=1, le=MAX_ID)):
    require(request, "admin")
    if not budget_actions.delete_budget(budget_id):
        raise not_found("budget")
    return 204, None


def price_out(row: ModelPrice, in_force: set[int]) -> dict:
    return {
        "id": row.pk,
        "model": row.model,
        "input_per_1k": plain_decimal(row.input_per_1k),
        "output_per_1k": plain_decimal(row.output_per_1k),
        "cached_input_per_1k": plain_decimal(row.cached_input_per_1k),
        "effective_from": row.effective_from,
        "in_force": row.pk in in_force,
        "note": row.note,
        "created_by": row.created_by,
        "created_at": row.created_at,
    }


def _in_force_ids() -> set[int]:
    rows = ModelPrice.objects.filter(effective_from__lte=timezone.now()).order_by("model", "-effective_from")
    return set(rows.distinct("model").values_list("pk", flat=True))


@router.get("/admin/prices", response=responses({200: PriceList}), summary="Every price row (admin)")
def list_prices(request, model: Text | None = Query(None, max_length=120)):
    """The whole price history, newest first per model (``in_force`` marks the row pricing calls now)."""
    require(request, "admin")
    rows = ModelPrice.objects.order_by("model", "-effective_from")
    if model is not None:
        rows = rows.filter(model=model)
    in_force = _in_force_ids()
    items = [price_out(row, in_force) for row in rows]
    return {"items": items, "count": len(items)}


@router.post("/admin/prices", response=responses({201: PriceOut}, 409), summary="Set a model's price (admin)")
def create_price(request, payload: PriceIn):
    """A new price row from ``effective_from`` (default now, never in the past): calls already made keep the
    price they were charged. Validated like the prices screen; a row for the same model and moment → 409."""
    principal = require(request, "admin")
    sent = payload.dict()
    form = PriceForm(data={name: "" if value is None else value for name, value in sent.items()})
    if not form.is_valid():
        raise _form_problems({name: list(messages) for name, messages in form.errors.items()}, "price")
    data = form.cleaned_data
    try:
        row = prices.set_price(
            data["model"],
            data["input_per_1k"],
            data["output_per_1k"],
            cached_input_per_1k=data["cached_input_per_1k"],
            effective_from=data["effective_from"],
            note=data["note"],
            user=f"api:{principal.agent}"[:150],
        )
    except DjangoValidationError as exc:
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        if "__all__" in errors:  # the (model, effective_from) unique constraint
            raise ApiError(
                409,
                "conflict",
                f"a {data['model']} price already starts at that moment: pick another effective_from",
                {"field": "effective_from"},
            ) from exc
        raise _form_problems(errors, "price") from exc
    except IntegrityError as exc:  # the same row saved by someone else meanwhile
        raise ApiError(409, "conflict", "a price for this model already starts at that moment") from exc
    row.refresh_from_db()
    return 201, price_out(row, _in_force_ids())


@router.delete(
    "/admin/prices/{price_id}", response=responses({204: None}, 409), summary="Delete an uncharged price (admin)"
)
def delete_price(request, price_id: int = Path(..., ge=1, le=MAX_ID)):
    """Only a row no call was charged at (a mistyped price, say): a charged one stays in the history (409)."""
    require(request, "admin")
    if not ModelPrice.objects.filter(pk=price_id).exists():
        raise not_found("price")
    if not prices.delete_price(price_id):
        raise ApiError(
            409, "conflict", "calls were already charged at this price, so it stays in the history", {"id": price_id}
        )
    return 204, None
