"""One link per peer, opened on first use, shared by every request to that peer.

Requests carry ids, so one connection serves any number of concurrent
requests; there is no pool of several connections per peer to manage. The
links run in a task group the owner passes in by name: they live as long as
the owner (a Worker, a Client), and end with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from trioclust.comm.comm import connect
from trioclust.comm.link import Link

if TYPE_CHECKING:
    from trioclust.security import Security


class ConnectionPool:
    """Links to peers by address, for requests (``get-data``, ``update-data``).

    Args:
        task_group: where the links' reader and writer tasks run (an anyio task
            group or a trio nursery).
        role: this side's role in the handshake.
        name: this side's name in the handshake.
        timeout: connect timeout in seconds; default ``comm.timeouts.connect``.
        security: the :class:`~trioclust.Security` to connect with, if any.
    """

    def __init__(
        self,
        task_group: Any,
        *,
        role: str,
        name: str = "",
        timeout: float | None = None,
        security: Security | None = None,
    ) -> None:
        self._task_group = task_group
        self._security = security
        self._role = role
        self._name = name
        self._timeout = timeout
        self._links: dict[str, Link] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, address: str) -> Link:
        """The open link to ``address``, connecting first if there is none."""
        link = self._links.get(address)
        if link is not None and not link.closed:
            return link
        lock = self._locks.setdefault(address, anyio.Lock())
        async with lock:
            link = self._links.get(address)
            if link is not None and not link.closed:
                return link
            comm = await connect(
                address, role=self._role, name=self._name, timeout=self._timeout,
                security=self._security,
            )
            link = Link(comm, {}, name=f"{self._role} {self._name} -> {address}")
            self._links[address] = link
            await self._task_group.start(self._run, address, link)
            return link

    async def _run(
        self, address: str, link: Link, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await link.run(task_status=task_status)
        finally:
            if self._links.get(address) is link:
                del self._links[address]

    def forget(self, address: str) -> None:
        """Drop the link to ``address`` from the pool (after its peer failed)."""
        self._links.pop(address, None)

    async def aclose(self) -> None:
        """Close every link."""
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.aclose()
