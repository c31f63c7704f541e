"""How an execution of a run stops without it being the agent's own error (suspended for a human,
cancelled, out of time, lease lost, not deterministic), and the exception agent code may meet from a
step: a rejected tool call."""

from __future__ import annotations

from typing import Any


class RunInterrupted(BaseException):
    """Base of the exceptions that stop an execution without being the agent's own error.

    A BaseException, like KeyboardInterrupt: agent code that catches `Exception` to handle its own
    errors must not swallow a suspension, a cancellation or a timeout by accident."""


class Suspend(RunInterrupted):
    """The run waits for a human: the worker is released; a decision resumes the run."""

    def __init__(self, seq: int, escalation_id: Any, reason: str):
        super().__init__(f"step {seq} waits for a human ({reason})")
        self.seq, self.escalation_id, self.reason = seq, escalation_id, reason


class RunCancelled(RunInterrupted):
    pass


class LeaseLost(RunInterrupted):
    """Another worker owns this run now (our lease expired): stop quietly, write nothing more."""


class RequestTimeout(RunInterrupted):
    def __init__(self, seconds: float):
        super().__init__(f"the run exceeded its request timeout of {seconds:g} s (human waits excluded)")
        self.seconds = seconds


class PhaseTimeout(RunInterrupted):
    """A critical phase ran out of time: the run fails."""

    def __init__(self, phase: str, seconds: float):
        super().__init__(f"critical phase {phase!r} timed out after {seconds:g} s")
        self.phase, self.seconds = phase, seconds


class PhaseDeadline(RunInterrupted):
    """Internal: the current phase's deadline passed during (or before) a ctx call inside it. ``ctx.phase``
    turns it into a failed run (critical) or a skipped phase (optional). A BaseException, so that agent code
    catching ``Exception`` around a call cannot keep a timed-out phase going."""

    def __init__(self, phase: str, seconds: float, what: str):
        super().__init__(f"phase {phase!r} ran out of its {seconds:g} s during {what}")
        self.phase, self.seconds, self.hops = phase, seconds, []


class NondeterminismError(RunInterrupted):
    """Replay found a different call at a recorded position: the agent code is not deterministic."""


class ToolRejected(Exception):
    """A human rejected this tool call, or nobody decided in time (``expired``: the safe default, reject,
    applied). Agent code may catch it and carry on; the message never blames a reviewer for an expiry."""

    def __init__(self, tool: str, comment: str = "", *, expired: bool = False, by_policy: bool = False):
        if expired:
            why = f"tool {tool!r} was not run: no reviewer decided in time, so it counts as rejected (the safe default)"
        elif by_policy:  # an auto-reject policy row: no reviewer was asked
            why = f"tool {tool!r} was rejected at once by the escalation policy"
        else:
            why = f"tool {tool!r} was rejected by a reviewer"
        super().__init__(why + (f": {comment}" if comment else ""))
        self.tool, self.comment, self.expired, self.by_policy = tool, comment, expired, by_policy
