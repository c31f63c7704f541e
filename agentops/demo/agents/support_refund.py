"""The support-refund demo agent: plan → look up the order → refund → email the customer → answer.

Input: `{"order_id": "A-10492", "message": "My headphones arrived broken", "amount": 49.5}` (`amount`
optional: a partial refund; the default is the order's total). Output: what happened, the refund and the
email (when they were made) and the answer for the customer.

What it exercises (DESIGN.md §4–§5):
- `ctx.cache`: the customer's profile is loaded through the `user_profiles` cache (24 h / 100, journaled);
- routing by operation: `planning` (large model), `classify` (small model, cacheable: the same message
  is answered from the cache), `response`;
- phases: planning (critical), tool_search (optional: an archived order's slow lookup is skipped and
  the agent carries on with the claimed amount, at low confidence), tool_execution (critical),
  response_generation (critical);
- the escalation policy: a refund over $1,000 is a high-value decision, a refund of an order that could
  not be verified has low confidence, and `send_email` is sensitive, so every email waits for a human;
- side effects exactly once: `issue_refund` and `send_email` record their effect under the step's
  idempotency key;
- `ToolRejected`: a rejected refund is answered with "a colleague will handle it manually".

Deterministic apart from `ctx` calls: every decision below depends only on the input and on what ctx
calls returned (which a resumed run replays from the journal).
"""

from __future__ import annotations

import re
from typing import Any

from agentops.demo.agents import tools
from agentops.runtime.context import RunContext, ToolRejected, agent

PLANNER = (
    "You are the planning step of a customer-support agent that can look up orders, issue refunds and "
    "email customers. Write a short numbered plan, then a line 'confidence: <0..1>' saying how sure "
    "you are that a refund is justified."
)
CLASSIFIER = "Classify the customer's sentiment as one word: positive, negative or neutral."
RESPONDER = (
    "You are a friendly customer-support agent. Write the reply to the customer in at most five "
    "sentences, based only on the facts given. Do not promise anything that is not in the facts."
)
# How sure the agent is when the plan does not say: by who produced the plan.
CONFIDENCE_BY_HANDLER = {"primary": 0.9, "backup": 0.85, "human": 0.95, "cache": 0.9, "rules": 0.6}
UNVERIFIED_CONFIDENCE = 0.5  # the order could not be looked up: the claimed amount is unverified
_CONFIDENCE = re.compile(r"confidence\s*[:=]\s*(0(?:\.\d+)?|1(?:\.0+)?|\.\d+)\b", re.IGNORECASE)


def plan_confidence(text: str, handler: str) -> float:
    """The confidence the plan states ("confidence: 0.8"), else one by who wrote the plan."""
    match = _CONFIDENCE.search(text or "")
    if match:
        return max(0.0, min(1.0, float(match.group(1))))
    return CONFIDENCE_BY_HANDLER.get(handler.split("_")[0], 0.7)


def _outcome(value: Any) -> dict:
    """A tool call's outcome as a dict. A rejection shows up as {"rejected": True, ...}: the step that a
    reviewer rejected raises ToolRejected the first time and replays as that dict afterwards."""
    if isinstance(value, dict):
        return value
    return {"result": value}  # a reviewer who took over may have written anything


def _call(ctx: RunContext, name: str, args: dict, **kwargs) -> dict:
    try:
        return _outcome(ctx.tool(name, args, **kwargs))
    except ToolRejected as exc:
        return {"rejected": True, "comment": exc.comment}


@agent("support-refund", description="Refunds a customer's order: plan, look up, refund, email, answer.")
def support_refund(ctx: RunContext, data: dict) -> dict:
    data = data or {}
    order_id = str(data.get("order_id", "")).strip().upper()
    message = str(data.get("message") or f"I would like a refund for order {order_id}.")
    claimed = float(data["amount"]) if data.get("amount") not in (None, "") else None

    def plan():
        planned = ctx.llm_result(
            "planning",
            [
                {"role": "system", "content": PLANNER},
                {"role": "user", "content": f"Order {order_id}. Customer wrote: {message}"},
            ],
            max_tokens=300,
        )
        mood = ctx.llm("classify", [{"role": "system", "content": CLASSIFIER}, {"role": "user", "content": message}])
        return planned, mood

    planned, mood = ctx.phase("planning", plan)
    confidence = plan_confidence(planned.text, planned.handler)
    mood = mood.strip().lower() if mood.strip().lower() in ("positive", "negative", "neutral") else "neutral"

    def search():
        found = ctx.tool("lookup_order", {"order_id": order_id})
        if isinstance(found, dict) and found.get("found") and found.get("email"):
            # The customer's profile from the CRM, through the user_profiles cache (24 h): a returning
            # customer's is not read again; a resumed run replays the profile it got.
            email_address = str(found["email"])
            profile = ctx.cache("user_profiles", email_address, lambda: tools.customer_profile(email_address))
            found = {**found, "profile": profile}
        return found

    order = ctx.phase("tool_search", search, critical=False, default=None)
    facts: dict[str, Any] = {"order_id": order_id, "sentiment": mood}
    refund = email = None
    if order is None:  # the lookup was skipped (the phase timed out): go on with what the customer said
        amount = claimed
        confidence = min(confidence, UNVERIFIED_CONFIDENCE)
        customer_email = data.get("email")
        facts["order"] = "could not be looked up in time"
    else:
        amount = min(claimed, order["total"]) if claimed is not None and order.get("found") else order.get("total")
        customer_email = order.get("email")
        facts["order"] = order

    if order is not None and not order.get("found"):
        status = "order_not_found"
    elif order is not None and order["status"] == "refunded":
        status = "already_refunded"
    elif not amount or amount <= 0:
        status = "needs_details"
    else:
        refund = ctx.phase(
            "tool_execution",
            lambda: _call(
                ctx,
                "issue_refund",
                {"order_id": order_id, "amount": round(amount, 2), "currency": "USD", "reason": message[:200]},
                value=round(amount, 2),
                confidence=confidence,
            ),
        )
        if refund is None:  # tool_execution is optional (the seed's): it timed out and was skipped
            status = "refund_pending"
            facts["refund"] = "the refund service did not confirm in time"
        elif refund.get("rejected"):
            status = "refund_rejected"
            facts["refund"] = {"rejected_by_reviewer": True, "comment": refund.get("comment", "")}
        else:
            status = "refunded"
            facts["refund"] = refund
            if customer_email:
                # Outside a phase: the wait for the reviewer is not tool execution time.
                email = _call(
                    ctx,
                    "send_email",
                    {
                        "to": customer_email,
                        "subject": f"Your refund for order {order_id}",
                        "body": (
                            f"We refunded {refund.get('amount', amount)} USD for order {order_id} "
                            f"(refund {refund.get('refund_id', 'pending')}). It reaches your card in 3–5 "
                            "business days."
                        ),
                    },
                    confidence=confidence,
                )
                facts["email"] = "held by a reviewer" if email.get("rejected") else "sent"
    facts["status"] = status

    answer = ctx.phase(
        "response_generation",
        lambda: ctx.llm(
            "response",
            [
                {"role": "system", "content": RESPONDER},
                {"role": "user", "content": f"Customer message: {message}\nFacts: {_describe(status, facts)}"},
            ],
            max_tokens=250,
        ),
    )
    return {
        "status": status,
        "order_id": order_id,
        "sentiment": mood,
        "confidence": round(confidence, 2),
        "refund": refund,
        "email": email,
        "answer": answer,
    }


def _describe(status: str, facts: dict) -> str:
    """The facts the answer may use, as plain sentences."""
    order = facts.get("order")
    order_text = (
        f"order {order['order_id']} ({order.get('product')}, {order.get('total')} USD, {order.get('status')})"
        if isinstance(order, dict) and order.get("found")
        else f"order {facts['order_id']}"
    )
    refund = facts.get("refund") if isinstance(facts.get("refund"), dict) else {}
    note = f" Reviewer note: {refund['comment']}" if refund.get("comment") else ""
    lines = {
        "refunded": f"We refunded {refund.get('amount')} USD for {order_text}; refund id {refund.get('refund_id')}.",
        "refund_rejected": f"The refund for {order_text} was not approved automatically; a colleague will handle "
        f"it manually within two business days.{note}",
        "already_refunded": f"{order_text} was already refunded earlier.",
        "refund_pending": f"The refund for {order_text} was not confirmed in time; a colleague will check it and "
        "confirm within one business day.",
        "order_not_found": f"We could not find {order_text}; ask the customer to check the order number.",
        "needs_details": f"We could not verify {order_text}; ask the customer for the amount and a receipt.",
    }
    text = lines[status]
    profile = order.get("profile") if isinstance(order, dict) else None
    if isinstance(profile, dict):
        text += f" The customer is a {profile.get('tier')} customer since {profile.get('customer_since')}."
    if facts.get("email"):
        text += f" Confirmation email: {facts['email']}."
    return text + f" Customer sentiment: {facts['sentiment']}."


__all__ = ["plan_confidence", "support_refund", "tools"]
