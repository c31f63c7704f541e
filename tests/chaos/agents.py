"""An agent for the chaos tests (loaded through AGENTOPS_AGENT_MODULES in the chaos stack's processes).

`chaos-ledger` posts two ledger entries through a side-effecting tool whose upstream acknowledges slowly:
the effect is recorded (under the step's idempotency key) first, then the acknowledgement takes a while.
A worker killed in that window leaves an effect whose step never finished: the step runs again on another
worker and must find the effect by its key instead of posting the entry a second time.
"""

from __future__ import annotations

import time

from agentops.runtime.context import agent, tool


@tool("post_entry", side_effect=True, description="Post a ledger entry (a payment system that answers slowly).")
def post_entry(args, idempotency_key=None):
    from agentops.runs.actions import journal

    effect, created = journal.record_effect(idempotency_key, "post_entry", dict(args))
    time.sleep(float(args.get("ack_seconds", 0.1)))  # the effect happened; its acknowledgement is on its way
    return {"entry_id": effect.pk, "created": created}


@agent("chaos-ledger", description="Plans, posts two ledger entries, answers.")
def ledger_agent(ctx, data):
    plan = ctx.llm("planning", [{"role": "user", "content": f"post two entries for {data.get('account', 'x')}"}])
    ack = data.get("ack_seconds", 0.1)
    first = ctx.tool("post_entry", {"account": data.get("account"), "amount": 10, "ack_seconds": ack})
    check = ctx.tool("t_echo", {"text": f"posted {first['entry_id']}"})
    second = ctx.tool("post_entry", {"account": data.get("account"), "amount": -10, "ack_seconds": ack})
    return {"plan": plan[:40], "entries": [first["entry_id"], second["entry_id"]], "check": check["echo"]}
