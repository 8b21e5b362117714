"""Leader election: of several controller replicas, one reconciles and serves the broker.

A coordination.k8s.io/v1 Lease in the controller's namespace names the leader, as client-go's
leader election does. The leader renews it every `retry` seconds. A candidate takes it when
it is free (never taken, or released by a leader that stopped) or when its record has not
changed for the lease's duration, by the candidate's own clock (no trust in another machine's
clock). Every write carries the resourceVersion it read, so of two candidates only one wins.

A leader that has not renewed within `renew_deadline` (shorter than the duration a candidate
waits) exits the process at once: crash-only, never a leader that goes on reconciling beside
a new one; whatever runs it (a Deployment) starts it again, as a candidate. A graceful stop
releases the lease, so that a standby takes over at its next try.

The election runs on a thread of its own with its own event loop and API connections: a
leader busy with thousands of agents still renews on time. A standby binds nothing but its
liveness endpoint: no broker (its readiness fails, so the broker's Service sends agents only
to the leader), no metrics, no watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import NoReturn

from aiohttp import web

from oneclick.controller.secrets import owner_reference
from oneclick.controller.settings import Settings
from oneclick.kits.kube import JSON, ApiError, Conflict, KubeClient, NotFound, resource_path

logger = logging.getLogger(__name__)

LEASES = "coordination.k8s.io/v1"
JITTER = 0.2  # a candidate's tries are spread by up to this fraction of the retry period


def default_identity() -> str:
    """Unique among running processes: this host's name and our pid."""
    return f"{socket.gethostname()}_{os.getpid()}"


def _now() -> str:
    """A MicroTime, as the API server writes them."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    duration: float = 15.0  # a candidate takes a lease unchanged this long
    renew_deadline: float = 10.0  # a leader that has not renewed this long exits
    retry: float = 2.0  # between renewals, and between a candidate's tries
    owner_service_account: str | None = None  # the Lease is made owned by it

    @classmethod
    def of(cls, settings: Settings) -> LeaseSettings:
        return cls(settings.namespace, settings.lease_name,
                   settings.leader_identity or default_identity(), settings.lease_duration,
                   settings.lease_renew_deadline, settings.lease_retry_period,
                   settings.owner_service_account)


@dataclass(frozen=True)
class Attempt:
    """One try to take or renew: whether we hold the lease now, and who does ("": not known
    yet, another write came first)."""

    leading: bool
    holder: str


class Elector:
    """Takes, renews and releases one Lease for one identity (one try per call)."""

    def __init__(self, kube: KubeClient, lease: LeaseSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._kube, self.lease, self._clock = kube, lease, clock
        self._path = resource_path(LEASES, "leases", lease.namespace, lease.name)
        self._observed: str | None = None  # the resourceVersion of the record last seen
        self._observed_at = 0.0  # when, by our clock, that record first appeared to us
        self.leading = False

    def _observe(self, lease: JSON) -> None:
        version = str(lease["metadata"].get("resourceVersion"))
        if version != self._observed:
            self._observed, self._observed_at = version, self._clock()

    async def attempt(self) -> Attempt:
        """Take the lease if it is free or expired, renew it if it is ours. ApiError when the
        API server cannot be asked."""
        try:
            lease = await self._kube.get(self._path)
        except NotFound:
            return await self._create()
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        mine = holder == self.lease.identity
        # The holder's own duration (a released lease says 1 s), by our clock.
        duration = float(spec.get("leaseDurationSeconds") or self.lease.duration)
        if holder and not mine and self._clock() < self._observed_at + duration:
            self.leading = False
            return Attempt(False, holder)
        now = _now()
        transitions = int(spec.get("leaseTransitions") or 0)
        lease["spec"] = {
            "holderIdentity": self.lease.identity,
            "leaseDurationSeconds": round(self.lease.duration),
            # Ours already (a renewal, or our pod's previous process): the same term goes on.
            "acquireTime": spec.get("acquireTime") if mine and self.leading else now,
            "renewTime": now,
            "leaseTransitions": transitions if mine else transitions + 1,
        }
        try:  # (the resourceVersion read travels with it: a write in between makes this 409)
            self._observe(await self._kube.request("PUT", self._path, body=lease))
        except Conflict:
            return Attempt(False, "")  # someone wrote first: the next try tells who
        self.leading = True
        return Attempt(True, self.lease.identity)

    async def _create(self) -> Attempt:
        owner = await owner_reference(self._kube, self.lease.namespace,
                                      self.lease.owner_service_account)
        now = _now()
        metadata: JSON = {"name": self.lease.name, "namespace": self.lease.namespace}
        if owner is not None:
            metadata["ownerReferences"] = [owner]
        body = {"apiVersion": LEASES, "kind": "Lease", "metadata": metadata,
                "spec": {"holderIdentity": self.lease.identity,
                         "leaseDurationSeconds": round(self.lease.duration),
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
        try:
            self._observe(await self._kube.create(
                resource_path(LEASES, "leases", self.lease.namespace), body))
        except Conflict:
            return Attempt(False, "")  # another candidate made it first
        self.leading = True
        return Attempt(True, self.lease.identity)

    async def acquire(self) -> None:
        """Try until this identity leads."""
        waiting_for, trouble = "", ""
        while True:
            try:
                async with asyncio.timeout(self.lease.renew_deadline):
                    attempt = await self.attempt()
                if attempt.leading:
                    return
                if attempt.holder and attempt.holder != waiting_for:
                    waiting_for = attempt.holder
                    logger.info("standing by: %s leads (Lease %s/%s)", attempt.holder,
                                self.lease.namespace, self.lease.name)
            except (ApiError, TimeoutError) as error:
                message = str(error) or "no answer in time"
                if message != trouble:  # (once per distinct trouble, not every try)
                    trouble = message
                    logger.warning("cannot take part in the election yet: %s", message)
            await asyncio.sleep(self.lease.retry * random.uniform(1, 1 + JITTER))  # noqa: S311

    async def keep(self, lost: Callable[[str], NoReturn]) -> NoReturn:
        """Renew every `retry` seconds; call `lost` when the lease went to another or was not
        renewed within the deadline (counted from the start of the last renewal that
        succeeded: what the others saw can only be later)."""
        renewed = self._clock()
        while True:
            await asyncio.sleep(self.lease.retry)
            started = self._clock()
            left = renewed + self.lease.renew_deadline - started
            try:
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):
                    attempt = await self.attempt()
            except TimeoutError:
                lost(f"the lease was not renewed within {self.lease.renew_deadline:g} s")
            except ApiError as error:
                logger.warning("cannot renew the lease (%s); %.0f s left to renew it", error,
                               renewed + self.lease.renew_deadline - self._clock())
                continue
            if attempt.leading:
                renewed = started
            elif attempt.holder:
                lost(f"{attempt.holder} holds the lease now")

    async def release(self) -> None:
        """Hand the lease back (only if it is still ours): a standby takes it at its next
        try instead of waiting for it to expire."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self._kube.get(self._path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.lease.identity:
                return
            now = _now()
            lease["spec"] = {"leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                             "leaseTransitions": int(spec.get("leaseTransitions") or 0)}
            await self._kube.request("PUT", self._path, body=lease)
            logger.info("released the lease %s/%s", self.lease.namespace, self.lease.name)
        except ApiError as error:  # it expires on its own
            logger.warning("could not release the lease (it expires in %g s): %s",
                           self.lease.duration, error)


@contextlib.asynccontextmanager
async def standby_liveness(port: int) -> AsyncIterator[None]:
    """/healthz on the liveness port while standing by (kopf's own endpoint takes the port
    once we lead): a standby is alive, only not ready."""
    if not port:
        yield
        return

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104  (the kubelet probes it)
    try:
        yield
    finally:
        await runner.cleanup()


def exit_now(reason: str) -> NoReturn:
    """Stop leading by ending the process, before any other candidate may take over."""
    logger.warning("lost leadership: %s; exiting so that only one controller serves", reason)
    os._exit(1)


class Leadership:
    """The election on its own thread: `wait()` returns once this process leads, and the
    thread goes on renewing until `release()` (or exits the process when it cannot)."""

    def __init__(self, lease: LeaseSettings, liveness_port: int = 0,
                 lost: Callable[[str], NoReturn] = exit_now) -> None:
        self.lease, self._liveness_port, self._lost = lease, liveness_port, lost
        self._leading = threading.Event()
        self._thread = threading.Thread(target=self._main, name="leader-election", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @classmethod
    def of(cls, settings: Settings) -> Leadership:
        return cls(LeaseSettings.of(settings), settings.health_port)

    def wait(self) -> None:
        self._thread.start()
        while not self._leading.wait(0.5):  # (short waits: signals reach the main thread)
            if not self._thread.is_alive():
                raise RuntimeError(f"the leader election ended: {self._error}")

    def release(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # (its loop may be closed already)
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # (wait() reports it)
            self._error = error

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        kube = KubeClient(timeout=self.lease.renew_deadline)
        elector = Elector(kube, self.lease)
        try:
            async with standby_liveness(self._liveness_port):
                await elector.acquire()
            logger.info("became leader as %s (Lease %s/%s)", self.lease.identity,
                        self.lease.namespace, self.lease.name)
            self._leading.set()
            renewing = asyncio.create_task(elector.keep(self._lost), name="renew-lease")
            await self._stop.wait()
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await elector.release()
        finally:
            await kube.aclose()
