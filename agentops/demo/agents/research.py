"""The research demo agent: plan → web searches → a long summary with sources.

Input: `{"topic": "solid-state batteries", "depth": 3, "audience": "engineers"}` (`depth`: how many
searches, 1–4). Output: the summary, the sources it used and whether the search was skipped.

What it exercises (DESIGN.md §4–§5):
- routing by operation: `planning` (large model) and `summarize` (a long answer, max_tokens=800);
- a cacheable tool: `web_search` results are cached, so a topic researched again (by any run) gets its
  searches from the cache (the step shows cache_hit, zero attempts);
- an optional phase: the searches run in tool_search; when it times out the phase is skipped and the
  summary is written without sources (and says so); planning and the summary are critical.
"""

from __future__ import annotations

from agentops.demo.agents import tools  # noqa: F401  (registers web_search)
from agentops.runtime.context import RunContext, agent

PLANNER = (
    "You are the planning step of a research assistant. Write a short numbered research plan: what to "
    "search for, which kinds of sources to trust, and what the summary must cover."
)
SUMMARIZER = (
    "You are a careful research assistant. Write a structured summary of about 400 words for the given "
    "audience: key findings, open questions and risks. Cite sources as [n] using only the sources given; "
    "if no sources are given, say that the summary is from general knowledge."
)
ANGLES = ("", "recent developments", "risks and limitations", "case studies")


def search_queries(topic: str, depth: int) -> list[str]:
    """The searches for a topic (deterministic: a resumed run asks the same questions)."""
    depth = max(1, min(int(depth), len(ANGLES)))
    return [f"{topic} {angle}".strip() for angle in ANGLES[:depth]]


@agent("research", description="Researches a topic: plan, web searches, a long summary with sources.")
def research(ctx: RunContext, data: dict) -> dict:
    data = data or {}
    topic = " ".join(str(data.get("topic") or "the history of the transistor").split())
    audience = str(data.get("audience") or "a general audience")
    queries = search_queries(topic, data.get("depth", 3))

    plan = ctx.phase(
        "planning",
        lambda: ctx.llm(
            "planning",
            [{"role": "system", "content": PLANNER}, {"role": "user", "content": f"Research topic: {topic}"}],
            max_tokens=300,
        ),
    )
    found = ctx.phase(
        "tool_search",
        lambda: [ctx.tool("web_search", {"query": query, "limit": 3}) for query in queries],
        critical=False,
        default=None,
    )
    sources: list[dict] = []
    seen: set[str] = set()
    for batch in found or []:
        for result in batch["results"]:
            if result["url"] not in seen:
                seen.add(result["url"])
                sources.append(result)
    listing = "\n".join(f"[{n}] {s['title']} ({s['url']}): {s['snippet']}" for n, s in enumerate(sources, 1))

    summary = ctx.phase(
        "response_generation",
        lambda: ctx.llm(
            "summarize",
            [
                {"role": "system", "content": SUMMARIZER},
                {
                    "role": "user",
                    "content": f"Topic: {topic}\nAudience: {audience}\nPlan:\n{plan}\n\n"
                    + (f"Sources:\n{listing}" if sources else "Sources: none (the search was unavailable)."),
                },
            ],
            max_tokens=800,
        ),
    )
    return {
        "topic": topic,
        "summary": summary,
        "sources": [{"title": s["title"], "url": s["url"]} for s in sources],
        "queries": queries,
        "search_skipped": found is None,
    }
