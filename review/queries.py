"""The queue's query: which escalations a view of /review/ holds (filters, team, assignee, free-text search),
in which order, and which page of them (DESIGN §6). The presenters turn the rows into display values.

Sized for 10,000 open items (tests/bench/bench_queue.py): the count and the page use the `queue_order`
index, the search a trigram index on `Escalation.search_text`, and a page reads only the columns a row prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlencode

from django.db.models import Count, Q, QuerySet, TextField
from django.db.models.functions import Cast, Left

from agentops.runs.models import Agent
from review.forms import (
    ALL_QUEUES,
    ALL_TEAMS,
    ASSIGNED_TO_ME,
    DEFAULT_SORT,
    FILTER_KEYS,
    MY_TEAMS,
    SORTS,
    UNASSIGNED,
)
from review.models import Escalation

PAGE_SIZE = 50
ARGUMENT_CHARS = 400  # of the arguments' JSON text a row reads (its summary shows 90)
AGENTS_MATCHED = 500  # agents whose name matches a search, at most (there are a few dozen)
# What a queue row prints, and nothing else: context, results and comments can be large.
ROW_FIELDS = (
    "pk",
    "priority",
    "reason",
    "state",
    "version",
    "queue",
    "kind",
    "source",
    "operation",
    "team",
    "created_at",
    "deadline_at",
    "reminded_at",
    "claim_expires_at",
    "agent__name",
    "claimed_by__username",
    "assigned_to__username",
)


def search(queryset: QuerySet, text: str) -> QuerySet:
    """The items whose operation, session id, arguments (JSON text) or agent name contain `text`, case-
    insensitive (LIKE with % and _ escaped by Django). The agents are matched first, in their own small
    table, so the condition on escalations stays one OR that PostgreSQL answers from two indexes."""
    agents = list(Agent.objects.filter(name__icontains=text).values_list("pk", flat=True)[:AGENTS_MATCHED])
    match = Q(search_text__icontains=text)
    if agents:
        match |= Q(agent_id__in=agents)
    return queryset.filter(match)


def filtered(queryset: QuerySet, filters: dict, user) -> QuerySet:
    """`queryset` narrowed by the cleaned filters of the queue form (review.forms.QueueFilterForm.cleaned)."""
    if filters.get("queue", ALL_QUEUES) != ALL_QUEUES:
        queryset = queryset.filter(queue=filters["queue"])
    if filters.get("reason"):
        queryset = queryset.filter(reason=filters["reason"])
    if filters.get("agent"):
        queryset = queryset.filter(agent__name=filters["agent"])
    if filters.get("priority"):
        queryset = queryset.filter(priority=filters["priority"])
    team = filters.get("team", ALL_TEAMS)
    if team == MY_TEAMS:
        # items of no team belong to everybody: a team's reviewers must not miss them
        queryset = queryset.filter(Q(team__in=filters.get("my_teams") or []) | Q(team=""))
    elif team != ALL_TEAMS:
        queryset = queryset.filter(team=team)
    assignee = filters.get("assignee")
    if assignee == ASSIGNED_TO_ME:
        queryset = queryset.filter(assigned_to=user)
    elif assignee == UNASSIGNED:
        queryset = queryset.filter(assigned_to__isnull=True)
    elif assignee:
        queryset = queryset.filter(assigned_to__username=assignee)
    if filters.get("q"):
        queryset = search(queryset, filters["q"])
    return queryset


def open_items(user, filters: dict) -> QuerySet:
    """The open escalations of the view, in its sort order (primary keys only are read from it: see page_of)."""
    order = SORTS.get(filters.get("sort") or DEFAULT_SORT, SORTS[DEFAULT_SORT])[1]
    open_now = Escalation.objects.visible_to(user).filter(state__in=Escalation.OPEN_STATES)
    return filtered(open_now, filters, user).order_by(*order)


def rows(pks: list[int]) -> list[Escalation]:
    """The escalations `pks`, in that order, with only what a row prints (and the start of the arguments)."""
    found = (
        Escalation.objects.filter(pk__in=pks)
        .select_related("agent", "claimed_by", "assigned_to")
        .only(*ROW_FIELDS)
        .annotate(arguments_head=Left(Cast("arguments", TextField()), ARGUMENT_CHARS))
    )
    by_pk = {escalation.pk: escalation for escalation in found}
    return [by_pk[pk] for pk in pks if pk in by_pk]


@dataclass(frozen=True)
class Page:
    number: int
    pages: int
    total: int
    first: int  # the first item's position (1-based), 0 on an empty page
    last: int
    items: list


def page_of(queryset: QuerySet, number: int, size: int | None = None) -> Page:
    """One page of `queryset` (a page past the end shows the last one) and how many items there are.
    Offset paging over the primary keys only: the sort reads three narrow columns of the matching rows
    (not their JSON), then the page's rows are read by key. Measured at 10,000 open items (bench_queue),
    the last page costs a few milliseconds more than the first; and page numbers are what reviewers share."""
    size = size or PAGE_SIZE
    total = queryset.count()
    pages = max(1, math.ceil(total / size))
    number = min(max(1, number), pages)
    offset = (number - 1) * size
    items = rows(list(queryset.values_list("pk", flat=True)[offset : offset + size]))
    return Page(number, pages, total, offset + 1 if items else 0, offset + len(items), items)


def query_string(filters: dict, **changes) -> str:
    """The query string of a view: its filters and sort (the default sort left out), plus `changes`
    (e.g. page=3). A saved filter keeps it; page links and the live refresh reproduce it."""
    values = {**{key: filters.get(key) for key in FILTER_KEYS}, **changes}
    if values.get("sort") == DEFAULT_SORT:
        values["sort"] = None
    return urlencode([(key, value) for key, value in values.items() if value not in (None, "")])


def open_counts_by_queue() -> dict[str, int]:
    """Open escalations per queue (every queue named, 0 when empty): one grouped count."""
    open_items = Escalation.objects.filter(state__in=Escalation.OPEN_STATES).order_by()
    counts = dict(open_items.values_list("queue").annotate(n=Count("pk")))
    return {queue: counts.get(queue, 0) for queue in Escalation.Queue.values}
