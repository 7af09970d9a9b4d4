"""Who may do what: the default rule, widened or narrowed by plugins.

One place decides both the single-status checks (``taskstatus_permission``) and the owners a
list is filtered by in its query (``taskstatus_visible_owners``), so that a status a caller
can list is one the caller can open.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..models import TaskStatus
from ..tracker import Tracker
from .principal import Principal

__all__ = ["ACTIONS", "allowed", "visible_owners"]

ACTIONS = frozenset({"view", "cancel", "delete", "change"})


def visible_owners(tracker: Tracker, principal: Principal) -> list[str] | None:
    """The owner ids whose statuses ``principal`` may list; None for every owner."""
    found = tracker.hook.taskstatus_visible_owners(principal=principal)
    if found is None:
        return None if principal.is_superuser else [principal.id]
    if found is True:
        return None
    if found is False:
        return []
    if isinstance(found, (str, bytes)) or not isinstance(found, Sequence):
        raise TypeError(
            f"taskstatus_visible_owners must return owner ids, True, False or None, got {found!r}"
        )
    return [str(owner) for owner in found]


def allowed(tracker: Tracker, principal: Principal, action: str, status: TaskStatus) -> bool:
    """Whether ``principal`` may ``action`` the status: the first plugin that decides, else
    a superuser or the owner may (and ``view`` whoever may list the owner's statuses)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {sorted(ACTIONS)}")
    decided = tracker.hook.taskstatus_permission(principal=principal, action=action, status=status)
    if decided is not None:
        return bool(decided)
    if principal.is_superuser or (status.user_id is not None and status.user_id == principal.id):
        return True
    if action != "view":
        return False
    owners = visible_owners(tracker, principal)
    return owners is None or status.user_id in owners
