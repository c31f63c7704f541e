"""Keystrokes from opening the review queue to a routine approval decided in PostgreSQL, in Chromium.

A reviewer (the cast's alice) opens `/review/` on the real uvicorn; the cursor is on the first row, the most
urgent. The bench types a path one key at a time and, after each key, reads the escalation from PostgreSQL:
the count is the number of keys typed when it is decided. A key that decides before the path is complete
fails the run: one key must never decide (the path's first key is checked to leave the item pending).

- subject: the routine path on the queue, `a` (a confirmation opens) then `Enter` (decided);
- baseline, in the same run: the approval screen's path, `Enter` (open the item), `a` (arms Approve),
  `Enter` (decided);
- bulk: N items selected with `x` (and `j` between them), then `a`, `Enter`; and the whole page selected
  with `*`, then `a`, `Enter`; each against the routine path repeated N times (the cursor moves to the next
  row after each decision, so that is 2 keys an item).

The queue holds only this bench's items while it runs (other open items of the bench database are closed
silently first), so the first row is the one just created. Keys are counted, not timed; the wall time from
the first key to the decision is printed for information.

Before issue 18 the queue's path was `j` (select the first row), `a` — two keys, the second deciding alone.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.bench.common import migrate
from tests.bench.harness import Result

AGENT = "bench-keystrokes"
ROUNDS = 3
BULK = 10
GOAL_KEYS = 2
SETTLE_MS = 250  # after a key that should not decide: time for anything it started to land
DECIDE_WAIT_S = 10.0  # after the last key of a path: how long the decision may take to reach PostgreSQL
# Playwright's sync API keeps an event loop running in this thread, where Django refuses ORM calls: the
# bench's own reads and writes go through one thread of their own.
ORM = ThreadPoolExecutor(1, thread_name_prefix="bench-orm")


def _orm(fn, *args):
    return ORM.submit(fn, *args).result()


def _prepare() -> None:
    from django.utils import timezone

    from agentops.runs.actions import agents as agent_actions
    from review.models import Escalation
    from tests.fixtures.people import ALICE

    ALICE.user()
    agent_actions.ensure_agent(AGENT, description="Benchmark: keystrokes to a routine approval")
    Escalation.objects.filter(state__in=Escalation.OPEN_STATES).update(
        state=Escalation.State.DECIDED, decision="approved", decided_at=timezone.now()
    )


def _items(count: int) -> list[int]:
    return _orm(_create_items, count)


def _create_items(count: int) -> list[int]:
    from agentops.runs.models import Agent
    from review.actions import create_escalation

    agent = Agent.objects.get(name=AGENT)
    return [
        create_escalation(
            operation="send_refund_note",
            reason="sensitive_operation",
            priority="high",
            deadline_seconds=600,
            agent=agent,
            session_id=f"keys-{time.time_ns()}-{i}",
            arguments={"to": f"customer-{i}@example.com", "amount": 12.5},
            context={"user_input": "refund order 42"},
        ).pk
        for i in range(count)
    ]


def _decided(pks: list[int]) -> int:
    return _orm(_count_decided, pks)


def _count_decided(pks: list[int]) -> int:
    from review.models import Escalation

    return Escalation.objects.filter(pk__in=pks, state=Escalation.State.DECIDED).count()


def _wait_decided(pks: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _decided(pks) == len(pks):
            return True
        time.sleep(0.02)
    return _decided(pks) == len(pks)


@contextmanager
def _browser(base_url: str):
    from playwright.sync_api import sync_playwright

    from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS, login
    from tests.fixtures.people import ALICE

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            login(page, base_url, ALICE)
            yield page
        finally:
            browser.close()


def _open_queue(page, base_url: str, first: int) -> None:
    page.goto(f"{base_url}/review/")
    page.wait_for_selector("#queue-page[data-live='open']", timeout=15_000)
    page.wait_for_selector(f"#queue-rows tr[data-escalation='{first}'].selected", timeout=15_000)


def _type_path(page, keys: list[str], pks: list[int]) -> tuple[int, float, bool]:
    """Type ``keys`` one at a time; answer (keys typed when every item of ``pks`` was decided — 0 if never —,
    ms from the first key to the decision, whether no key before the last decided anything)."""
    started = time.perf_counter()
    for typed, key in enumerate(keys, start=1):
        page.keyboard.press(key)
        if typed < len(keys):
            page.wait_for_timeout(SETTLE_MS)
            if _decided(pks):
                return typed, (time.perf_counter() - started) * 1000, False
            continue
        if _wait_decided(pks, DECIDE_WAIT_S):
            return typed, (time.perf_counter() - started) * 1000, True
    return 0, (time.perf_counter() - started) * 1000, True


def _routine(page, base_url: str) -> tuple[int, float, bool]:
    (pk,) = _items(1)
    _open_queue(page, base_url, pk)
    return _type_path(page, ["a", "Enter"], [pk])


def _approval_screen(page, base_url: str) -> tuple[int, float, bool]:
    (pk,) = _items(1)
    _open_queue(page, base_url, pk)
    page.keyboard.press("Enter")  # opens the approval screen: the path's first key
    page.wait_for_selector("#review-page[data-live='open']", timeout=15_000)
    typed, ms, safe = _type_path(page, ["a", "Enter"], [pk])
    return (typed + 1 if typed else 0), ms, safe


def _bulk(page, base_url: str, keys_for) -> tuple[int, float, bool]:
    pks = _items(BULK)
    _open_queue(page, base_url, pks[0])
    page.wait_for_selector(f"#queue-rows tr[data-escalation='{pks[-1]}']")
    return _type_path(page, keys_for(BULK), pks)


def _with_x(count: int) -> list[str]:
    return ["x"] + ["j", "x"] * (count - 1) + ["a", "Enter"]


def _with_star(count: int) -> list[str]:
    return ["*", "a", "Enter"]


def _median(samples: list[tuple[int, float, bool]]) -> tuple[float, float, bool]:
    keys = [s[0] if s[0] else float("inf") for s in samples]
    return statistics.median(keys), statistics.median(s[1] for s in samples), all(s[2] for s in samples)


def run() -> list[Result]:
    from tests.bench.common import uvicorn_server

    migrate()
    _prepare()
    routine, screen, with_x, with_star = [], [], [], []
    with uvicorn_server() as url, _browser(url) as page:
        _routine(page, url)  # warm-up: the first page load compiles templates and opens connections
        for index in range(ROUNDS):  # interleaved, as every bench here
            order = (_routine, _approval_screen) if index % 2 == 0 else (_approval_screen, _routine)
            for path in order:
                (routine if path is _routine else screen).append(path(page, url))
            with_x.append(_bulk(page, url, _with_x))
            with_star.append(_bulk(page, url, _with_star))
    keys, ms, safe = _median(routine)
    base_keys, base_ms, base_safe = _median(screen)
    x_keys, x_ms, x_safe = _median(with_x)
    star_keys, star_ms, star_safe = _median(with_star)
    singles = GOAL_KEYS * BULK
    note = (
        f"{ROUNDS} rounds (times include a {SETTLE_MS} ms pause after every key but the last); routine a, Enter: {keys:g} keys, {ms:.0f} ms from the first key to the decision; "
        f"approval screen Enter, a, Enter: {base_keys:g} keys, {base_ms:.0f} ms; "
        f"bulk of {BULK} with x: {x_keys:g} keys, {x_ms:.0f} ms; with *: {star_keys:g} keys, {star_ms:.0f} ms; "
        f"no single key decided: {safe and base_safe and x_safe and star_safe}"
    )
    print(f"  {note}", flush=True)
    return [
        Result(
            "review: keys, queue → routine approval decided (vs approval screen)",
            "keys",
            keys,
            base_keys,
            f"<= {GOAL_KEYS}, never 1",
            keys <= GOAL_KEYS and safe and base_safe,
            note=note,
        ),
        Result(
            f"review: keys, bulk approve {BULK} selected with x (vs {BULK} routine)",
            "keys",
            x_keys,
            singles,
            f"<= {2 * BULK + 1} (x, j per item; a, Enter)",
            x_keys <= 2 * BULK + 1 and x_safe,
        ),
        Result(
            f"review: keys, bulk approve a page of {BULK} with * (vs {BULK} routine)",
            "keys",
            star_keys,
            singles,
            "<= 3",
            star_keys <= 3 and star_safe,
        ),
    ]
