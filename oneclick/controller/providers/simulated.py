"""The simulated provider: instances that "launch" at once and exist only in this process.

For benchmarks and dry runs of the control path at sizes no machine can boot: every member is
running immediately, at an address of TEST-NET-2 (198.51.100.0/24 and onwards, never routed),
and its agent is whoever holds its bootstrap (a benchmark's simulated agents). Idempotent by
key within one controller process; a restarted controller has none, as a crashed cloud would.
"""

from __future__ import annotations

import ipaddress

from oneclick.controller.providers.base import Instance, InstanceState, LaunchRequest

FIRST = ipaddress.ip_address("198.51.100.1")
DOMAIN = "simulated.oneclick"  # what its members' FQDNs end in


class SimulatedProvider:
    name = "simulated"

    def __init__(self) -> None:
        self._by_key: dict[str, Instance] = {}
        self._by_id: dict[str, Instance] = {}
        self._key_of: dict[str, str] = {}

    @property
    def broker_host(self) -> str:
        return "127.0.0.1"

    @property
    def domain(self) -> str:
        return DOMAIN

    def limitations(self) -> list[str]:
        return ["instances are simulated: nothing boots, no agent runs unless someone runs one "
                "with the member's bootstrap"]

    async def launch(self, request: LaunchRequest) -> Instance:
        found = self._by_key.get(request.idempotency_key)
        if found is None:
            address = str(FIRST + len(self._by_key))
            found = Instance(f"sim-{request.idempotency_key[:13]}", InstanceState.RUNNING,
                             [address])
            self._by_key[request.idempotency_key] = found
            self._by_id[found.id] = found
            self._key_of[found.id] = request.idempotency_key
        return found

    async def lookup(self, idempotency_key: str) -> Instance | None:
        return self._by_key.get(idempotency_key)

    async def describe(self, instance_ids: list[str]) -> dict[str, Instance]:
        return {i: self._by_id.get(i) or Instance(i, InstanceState.TERMINATED)
                for i in instance_ids}

    async def terminate(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            self._by_id.pop(instance_id, None)
            self._by_key.pop(self._key_of.pop(instance_id, ""), None)

    async def aclose(self) -> None:
        """Nothing is held open."""
