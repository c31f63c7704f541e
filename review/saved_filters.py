"""A reviewer's named queue views (SavedFilter): saved and deleted only here."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from review.models import SavedFilter

MAX_PER_USER = 50
# The query-string keys of a queue view, in the order a saved one keeps them (the page is not kept: a saved
# view opens on its first page).
FILTER_KEYS = ("q", "queue", "team", "assignee", "reason", "agent", "priority", "sort")
MAX_QUERY = 1000


def clean_query(query: str) -> str:
    """`query` reduced to the queue's own keys (first value of each, in FILTER_KEYS order): whatever else a
    URL carried is dropped rather than stored."""
    values: dict[str, str] = {}
    for key, value in parse_qsl(query.lstrip("?"), keep_blank_values=False):
        if key in FILTER_KEYS and key not in values:
            values[key] = value
    return urlencode([(key, values[key]) for key in FILTER_KEYS if key in values])


@transaction.atomic
def save_filter(user, name: str, query: str) -> SavedFilter:
    """Save the queue view `query` as `name` for `user` (a name used again gets the new view). Raises
    ValidationError when the view is too long or the reviewer already keeps MAX_PER_USER of them."""
    name = name.strip()
    query = clean_query(query)
    if not name:
        raise ValidationError(_("Give the view a name."))
    if len(query) > MAX_QUERY:
        raise ValidationError(_("This view is too long to save; shorten the search."))
    saved = SavedFilter.objects.select_for_update().filter(user=user, name=name).first()
    if saved is None:
        if SavedFilter.objects.filter(user=user).count() >= MAX_PER_USER:
            raise ValidationError(
                _("You keep %(count)s saved views already; delete one first.") % {"count": MAX_PER_USER}
            )
        return SavedFilter.objects.create(user=user, name=name, query=query)
    saved.query = query
    saved.save(update_fields=["query"])
    return saved


@transaction.atomic
def delete_filter(user, pk: int) -> bool:
    """Delete `user`'s saved view `pk`; False when they have none of that id (another's is never touched)."""
    deleted, _rows = SavedFilter.objects.filter(user=user, pk=pk).delete()
    return bool(deleted)
