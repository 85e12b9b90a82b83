"""Who may call an operation, declared beside it and published in the OpenAPI document (``x-allow``).

The kinds of principal an operation names:

- ``anonymous``: anyone, signed in or not;
- ``authenticated``: anyone signed in;
- ``owner``, ``member``: the owner or a (non-owner) member of a household (``Principal.household_role``);
- ``producer``, ``consumer``: a household taking part in its zone's market (``Principal.market_roles``);
- ``operator``, ``support``: the global roles (``Principal.roles``).

A refused principal gets 401 when anonymous and 403 otherwise. Whether a household may see one
particular thing is the handler's decision: another household's thing is answered 404
(:func:`own_household`), so its existence is not revealed.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.errors import ApiError
from api.principal import Principal

KINDS = ("anonymous", "authenticated", "owner", "member", "producer", "consumer", "operator", "support")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="quartier"'}


def kinds_of(principal: Principal | None) -> frozenset[str]:
    """Every kind a principal counts as (see the module docstring)."""
    if principal is None:
        return frozenset({"anonymous"})
    kinds = {"anonymous", "authenticated", *principal.roles, *principal.market_roles}
    if principal.household_role is not None:
        kinds.add(principal.household_role)
    return frozenset(kinds)


@dataclass(frozen=True)
class Allow:
    kinds: tuple[str, ...]

    def permits(self, principal: Principal | None) -> bool:
        return not kinds_of(principal).isdisjoint(self.kinds)

    def check(self, principal: Principal | None) -> None:
        if self.permits(principal):
            return
        if principal is None:
            raise ApiError(401, "unauthenticated", "sign in, or send Authorization: Bearer <token>",
                           "Authorization", "header", headers=CHALLENGE)
        raise ApiError(403, "forbidden", f"not allowed to you; allowed: {', '.join(self.kinds)}",
                       "Authorization", "header")


def allow(*kinds: str) -> Allow:
    """The principals that may call an operation, e.g. ``allow("owner", "member")``."""
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise ValueError(f"allow() takes some of {', '.join(KINDS)}; got {', '.join(kinds) or 'nothing'}")
    return Allow(tuple(dict.fromkeys(kinds)))


def own_household(principal: Principal, household: str, field: str = "household", what: str = "household") -> None:
    """404 unless ``household`` is the principal's own (operators and support see every household)."""
    if principal.household == household or not principal.roles.isdisjoint({"operator", "support"}):
        return
    raise ApiError(404, "not_found", f"no {what} {household!r} you may see", field, "path")
