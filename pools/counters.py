"""Counters in the database that only grow: the fencing numbers of the leases, the regions' sequences."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Model


def row_ensure(model: type[Model], *, key: dict[str, Any]) -> None:
    """Create the row `key` (its other fields at their defaults) unless it exists. Callers may race: one
    that meets the other's uncommitted row waits for it, and takes the duplicate key as "it exists"."""
    try:
        model._default_manager.get_or_create(**key)
    except IntegrityError:
        pass  # created at the same moment by another caller


def next_value(model: type[Model], *, key: dict[str, Any], field: str) -> int:
    """Increment the counter `field` of the row `key` (created at 0 when missing) and return its new value, in
    a transaction of its own: whoever increments it later gets a higher value."""
    row_ensure(model, key=key)
    with transaction.atomic():
        model._default_manager.filter(**key).update(**{field: F(field) + 1})
        return int(model._default_manager.filter(**key).values_list(field, flat=True).get())
