"""SIP accounts as the core sees them, and the recording policies an account can have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: INFO ``Record`` is refused with 403; the account's calls are recorded only if the other
#: party's policy is ``always``.
POLICY_NEVER: Final = "never"
#: The phone's Record key decides: INFO ``Record: on`` starts, ``Record: off`` stops.
POLICY_ON_DEMAND: Final = "on_demand"
#: Every answered call is recorded from the answer to the hang-up; ``Record: off`` gets 403.
POLICY_ALWAYS: Final = "always"
POLICIES: Final = (POLICY_NEVER, POLICY_ON_DEMAND, POLICY_ALWAYS)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """One phone's account: who it is, how it authenticates, how its calls are recorded."""

    username: str
    #: Realm the HA1 values were computed for; authentication in another realm fails.
    realm: str
    #: H(username:realm:password) with MD5 and with SHA-256; None: no password (an account
    #: that only carries a policy, for phones that register upstream in proxy mode).
    ha1_md5: str | None = None
    ha1_sha256: str | None = None
    policy: str = POLICY_ON_DEMAND
    display_name: str = ""

    def __post_init__(self) -> None:
        check_policy(self.policy)

    def ha1(self, algorithm: str) -> str | None:
        if algorithm == "MD5":
            return self.ha1_md5
        if algorithm == "SHA-256":
            return self.ha1_sha256
        return None
