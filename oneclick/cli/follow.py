"""Following objects as they change, as `kubectl get -w` does: one list, then watches from its
resourceVersion, taken up again when the server ends one (and listed again when the version
is too old to watch from)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from oneclick.kits.kube import JSON, ApiError, KubeClient

TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


class Gone(Exception):
    """The version we watched from is too old (410): list again."""


async def events(kube: KubeClient, path: str, version: str, params: Mapping[str, str],
                 headers: Mapping[str, str] | None = None) -> AsyncIterator[JSON]:
    """Every event from `version` on, across watch requests (bookmarks only move the version);
    Gone when the server no longer has it. A lost connection is retried after a second."""
    while True:
        try:
            async for event in kube.watch(path, version, params=params, headers=headers):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message")),
                                   f"watch {path}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    yield event
        except ApiError as error:
            if error.status == 410:
                raise Gone() from error
            if error.status != 0:  # (0: the API server could not be reached; try again)
                raise
            await asyncio.sleep(1.0)


@dataclass
class Followed:
    """Objects of one list (a launch, a launch's members) kept current by a watch in the
    background; `changed` is set at every change."""

    kube: KubeClient
    path: str
    params: dict[str, str] = field(default_factory=dict)
    objects: dict[tuple[str, str], JSON] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> Followed:
        version = await self._list()
        self._task = asyncio.ensure_future(self._follow(version))
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def items(self) -> list[JSON]:
        return list(self.objects.values())

    async def _list(self) -> str:
        listing = await self.kube.list(self.path, **self.params)
        self.objects = {_key(o): o for o in listing.get("items", [])}
        self.changed.set()
        return str(listing["metadata"]["resourceVersion"])

    async def _follow(self, version: str) -> None:
        while True:
            try:
                async for event in events(self.kube, self.path, version, self.params):
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        self.objects.pop(_key(obj), None)
                    else:
                        self.objects[_key(obj)] = obj
                    self.changed.set()
            except Gone:
                version = await self._list()

    def check(self) -> None:
        """Raise what ended the watch, if anything did (a refusal: 403, say)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error


async def until_changed(*followed: Followed, seconds: float) -> None:
    """Until any of them changes, or `seconds`; raises what ended a watch."""
    waits = [asyncio.ensure_future(f.changed.wait()) for f in followed]
    await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    for f in followed:
        f.changed.clear()
        f.check()


def _key(obj: JSON) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))
