"""The OpenAPI document is built once per process: building it costs ~0.2 s of CPU and anyone may ask for it."""

from __future__ import annotations

from ninja import NinjaAPI


def build_openapi_once(api: NinjaAPI) -> None:
    """Make ``api`` keep each OpenAPI document it builds (one per path prefix)."""
    documents: dict[str, object] = {}
    build = api.get_openapi_schema

    def openapi_once(*, path_prefix: str | None = None, path_params: dict | None = None):
        if path_prefix is None:
            path_prefix = api.get_root_path(path_params or {})
        if path_prefix not in documents:
            documents[path_prefix] = build(path_prefix=path_prefix)
        return documents[path_prefix]

    api.get_openapi_schema = openapi_once
