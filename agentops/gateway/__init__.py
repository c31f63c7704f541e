"""The OpenAI-compatible gateway at /v1 (DESIGN.md §8b): ``app`` is its ASGI application."""

from agentops.gateway.app import app

__all__ = ["app"]
