"""An account's API tokens die with its password or its activity: a password reset after a leak, or a
deactivated account, must not leave a working token behind."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models.signals import post_save, pre_save


def _before(sender: type[User], instance: User, update_fields: frozenset[str] | None = None,
            **kwargs: Any) -> None:
    # A login writes last_login only: no query then.
    watched = instance.pk is not None and (update_fields is None or "is_active" in update_fields)
    was_active = User.objects.filter(pk=instance.pk).values_list("is_active", flat=True).first() if watched else None
    instance._eipdash_was_active = was_active  # type: ignore[attr-defined]


def _after(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    from .api.tokens import token_revoke_all

    if created:
        return
    if getattr(instance, "_eipdash_was_active", None) and not instance.is_active:
        token_revoke_all(user=instance, why=f"the account {instance.get_username()!r} was deactivated")
    # Django's own mark of a new password (set_password), the one its password validators hear about: set until
    # the save ends, and cleared for a mere re-hash of the same password at login (a new hasher's iterations).
    elif getattr(instance, "_password", None) is not None:
        token_revoke_all(user=instance, why=f"the password of {instance.get_username()!r} changed")


def connect() -> None:
    pre_save.connect(_before, sender=User, dispatch_uid="eipdash-tokens-before")
    post_save.connect(_after, sender=User, dispatch_uid="eipdash-tokens-after")
