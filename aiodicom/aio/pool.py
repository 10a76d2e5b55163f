"""A pool of client associations to one peer.

::

    async with aiodicom.Pool("pacs", 104, called_ae="PACS", contexts=[...]) as pool:
        await pool.echo()
        async for status, identifier in pool.find(query, model="study"):
            ...
        async with pool.acquire() as assoc:    # any operation, one association
            await assoc.store(ds)

* Established associations are reused, the most recently returned first
  (LIFO keeps a few warm and lets the rest go idle).
* At most ``max_associations`` are open (or opening) at once; callers beyond
  that wait in a FIFO queue: an association coming back, or a free slot, goes
  to the longest waiter, never to a newcomer.
* An association that failed (DIMSE timeout), was aborted/released by the
  peer or is otherwise no longer established is dropped, not reused.
* :meth:`Pool.echo` and :meth:`Pool.find` (before its first result) retry
  once on a fresh association when the one they got turns out to be dead
  (:class:`~aiodicom.AssociationAborted`/``ConnectionError``); stores and
  retrieves are never retried.
* Idle associations are released after ``idle_timeout`` seconds by a single
  timer for the whole pool.
* :meth:`Pool.close` releases everything and fails waiting callers with
  :class:`PoolClosed`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, TypeVar

from .association import Association
from .client import ContextSpec, associate
from .errors import AssociationAborted, DICOMError, DIMSETimeout

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..dimse.status import Status

__all__ = ["Pool", "PoolClosed", "PooledIterator"]

log = logging.getLogger("aiodicom.pool")

T = TypeVar("T")

#: Errors after which an idempotent operation is retried on a fresh association.
_RETRYABLE = (AssociationAborted, ConnectionError)


class PoolClosed(DICOMError):
    """The pool was closed (while waiting, or before the call)."""


class _Lease:
    """``async with pool.acquire() as assoc``: returns the association on exit."""

    __slots__ = ("pool", "assoc")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.assoc: Association | None = None

    async def __aenter__(self) -> Association:
        self.assoc = await self.pool._acquire()
        return self.assoc

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assoc, self.assoc = self.assoc, None
        if assoc is not None:
            # After a DIMSE timeout the peer's state is unknown: do not reuse.
            self.pool._release(assoc, reuse=not isinstance(exc, DIMSETimeout))


class PooledIterator(AsyncIterator[T]):
    """An operation's results, iterated while holding one pooled association.

    Use ``async with`` (or ``aclose()``) for a deterministic early exit;
    a plain ``async for`` left with ``break`` is cleaned up by asyncio's
    async-generator finalizer (C-CANCEL, drain, association returned).
    """

    def __init__(self, agen: AsyncGenerator[T, None]) -> None:
        self._agen = agen

    def __aiter__(self) -> PooledIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop the operation (C-CANCEL if running) and return the association."""
        await self._agen.aclose()

    async def __aenter__(self) -> PooledIterator[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Pool:
    """Associations to ``host:port``, opened on demand and reused.

    ``contexts``/``roles`` and ``associate_kwargs`` (``dimse_timeout``,
    ``acse_timeout``, ``max_pdu_length``, ``ssl``, ...) are passed to
    :class:`~aiodicom.associate` for every association.  Propose every
    context any caller needs: all associations of a pool are alike.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        called_ae: str = "ANY-SCP",
        calling_ae: str = "AIODICOM",
        contexts: Iterable[ContextSpec] | None = None,
        roles: dict[str, tuple[bool, bool]] | None = None,
        max_associations: int = 8,
        idle_timeout: float | None = 30.0,
        **associate_kwargs: Any,
    ) -> None:
        if max_associations < 1:
            raise ValueError("max_associations must be at least 1")
        self.host = host
        self.port = port
        self.called_ae = called_ae
        self.calling_ae = calling_ae
        self.contexts = list(contexts) if contexts is not None else None
        self.roles = roles
        self.max_associations = max_associations
        self.idle_timeout = idle_timeout
        self.associate_kwargs = associate_kwargs
        # validate the arguments now rather than on the first acquire
        associate(host, port, called_ae=called_ae, calling_ae=calling_ae, contexts=self.contexts, roles=roles,
                  **associate_kwargs)
        self._idle: list[tuple[Association, float]] = []  # a stack: [-1] is the warmest
        self._busy: set[Association] = set()
        self._opening = 0
        self._waiters: collections.deque[asyncio.Future[Association | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._closed = False
        self._returned: asyncio.Event | None = None
        #: associations opened over the pool's lifetime
        self.opened_total = 0

    # ------------------------------------------------------------ stats

    @property
    def size(self) -> int:
        """Associations open or being opened (idle + in use + opening)."""
        return len(self._idle) + len(self._busy) + self._opening

    @property
    def idle(self) -> int:
        """Established associations waiting for a caller."""
        return len(self._idle)

    @property
    def in_use(self) -> int:
        """Associations currently lent to callers."""
        return len(self._busy)

    @property
    def waiting(self) -> int:
        """Callers queued for an association."""
        return sum(1 for f in self._waiters if not f.done())

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"<Pool {self.called_ae}@{self.host}:{self.port} size={self.size} idle={self.idle} "
            f"waiting={self.waiting}{' closed' if self._closed else ''}>"
        )

    # ---------------------------------------------------------- acquire

    def acquire(self) -> _Lease:
        """``async with pool.acquire() as assoc``: lend one association for the block."""
        return _Lease(self)

    async def _acquire(self) -> Association:
        if self._closed:
            raise PoolClosed("the pool is closed")
        if not self._waiters:
            assoc = self._pop_idle()
            if assoc is not None:
                return assoc
            if self.size < self.max_associations:
                self._opening += 1
                return await self._open()
        fut: asyncio.Future[Association | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            got = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Handed an association (or a slot) just as we were cancelled.
                given = fut.result()
                if given is None:
                    self._opening -= 1
                    self._grant_slots()
                else:
                    self._release(given)
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        if got is None:  # a free slot: open a new association
            return await self._open()
        return got

    def _pop_idle(self) -> Association | None:
        while self._idle:
            assoc, _ = self._idle.pop()
            if assoc.is_established:
                self._busy.add(assoc)
                return assoc
            self._discard(assoc)
        return None

    async def _open(self) -> Association:
        """Open an association in a slot already counted in ``_opening``."""
        try:
            assoc = await associate(
                self.host,
                self.port,
                called_ae=self.called_ae,
                calling_ae=self.calling_ae,
                contexts=self.contexts,
                roles=self.roles,
                **self.associate_kwargs,
            )
        except BaseException:
            self._opening -= 1
            self._grant_slots()
            raise
        self._opening -= 1
        self.opened_total += 1
        if self._closed:
            self._busy.add(assoc)
            self._release(assoc)
            raise PoolClosed("the pool was closed while an association was being opened")
        self._busy.add(assoc)
        assoc.closed.add_done_callback(functools.partial(self._on_closed, assoc))
        return assoc

    # ---------------------------------------------------------- release

    def _release(self, assoc: Association, reuse: bool = True) -> None:
        """Take back a lent association."""
        if assoc not in self._busy:
            return
        self._busy.discard(assoc)
        if self._closed or not reuse or not assoc.is_established:
            self._discard(assoc, graceful=reuse)
            self._grant_slots()
            self._notify_returned()
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self._busy.add(assoc)
                fut.set_result(assoc)
                return
        self._idle.append((assoc, asyncio.get_running_loop().time()))
        self._arm_timer()

    def _grant_slots(self) -> None:
        """Give free slots to the longest waiters (they open associations)."""
        while self._waiters and self.size < self.max_associations:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._opening += 1
            fut.set_result(None)

    def _discard(self, assoc: Association, graceful: bool = False) -> None:
        """Let go of an association: release it if it is healthy, else abort it."""
        if assoc.closed.done():
            return
        if graceful and assoc.is_established:
            task = asyncio.get_running_loop().create_task(self._release_quietly(assoc))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
        else:
            assoc.abort()

    @staticmethod
    async def _release_quietly(assoc: Association) -> None:
        try:
            await assoc.release()
        except Exception:  # pragma: no cover - release() aborts on failure
            log.debug("release failed", exc_info=True)
            assoc.abort()

    def _on_closed(self, assoc: Association, _fut: object = None) -> None:
        """The association closed (peer abort/release, network): forget it if idle."""
        for i, (a, _) in enumerate(self._idle):
            if a is assoc:
                del self._idle[i]
                self._grant_slots()
                break

    def _notify_returned(self) -> None:
        if self._returned is not None and not self._busy:
            self._returned.set()

    # ----------------------------------------------------------- idle timer

    def _arm_timer(self) -> None:
        if self._timer is not None or not self._idle or self.idle_timeout is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._idle[0][1] + self.idle_timeout, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self.idle_timeout is not None
        deadline = asyncio.get_running_loop().time() - self.idle_timeout
        # The stack's bottom holds the longest idle ones.
        n = 0
        while n < len(self._idle) and self._idle[n][1] <= deadline:
            n += 1
        expired, self._idle[:n] = self._idle[:n], []
        for assoc, _ in expired:
            log.debug("releasing idle association %r", assoc)
            self._discard(assoc, graceful=True)
        self._arm_timer()

    # --------------------------------------------------------------- close

    async def close(self, timeout: float = 10.0) -> None:
        """Release all associations; fail waiting callers with :class:`PoolClosed`.

        Associations in use are released when they come back; after
        ``timeout`` seconds those still in use are aborted.
        """
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(PoolClosed("the pool was closed while waiting for an association"))
        idle, self._idle = self._idle, []
        for assoc, _ in idle:
            self._discard(assoc, graceful=True)
        if self._busy:
            self._returned = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self._returned.wait()
            except TimeoutError:
                for assoc in list(self._busy):
                    log.warning("pool closed: aborting association still in use %r", assoc)
                    assoc.abort()
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------- helpers

    async def _retry(self, op: Callable[[Association], Awaitable[T]]) -> T:
        for attempt in (0, 1):
            try:
                async with self.acquire() as assoc:
                    return await op(assoc)
            except _RETRYABLE:
                if attempt or self._closed:
                    raise
                log.debug("association lost; retrying once on a fresh one")
        raise AssertionError("unreachable")  # pragma: no cover

    async def echo(self) -> int:
        """C-ECHO on a pooled association (retried once on a dead association)."""
        return await self._retry(lambda a: a.echo())

    async def store(
        self, dataset_or_path: Dataset | str | os.PathLike[str], *, priority: int = 0
    ) -> Status:
        """C-STORE on a pooled association (never retried)."""
        async with self.acquire() as assoc:
            return await assoc.store(dataset_or_path, priority=priority)

    def find(
        self, query: Dataset, model: str = "patient", *, priority: int = 0
    ) -> PooledIterator[tuple[Status, Dataset | None]]:
        """C-FIND: ``async for status, identifier in pool.find(query, "study")``.

        Holds one association for the iteration; retried once on a fresh
        association if the first one dies before any response was yielded.
        """
        return PooledIterator(self._find(query, model, priority))

    async def _find(
        self, query: Dataset, model: str, priority: int
    ) -> AsyncGenerator[tuple[Status, Dataset | None], None]:
        for attempt in (0, 1):
            yielded = False
            try:
                async with self.acquire() as assoc:
                    async with assoc.find(query, model, priority=priority) as results:
                        async for item in results:
                            yielded = True
                            yield item
                return
            except _RETRYABLE:
                if yielded or attempt or self._closed:
                    raise
                log.debug("association lost before any C-FIND response; retrying once")

    def get(self, identifier: Any, model: str = "patient", **kwargs: Any) -> PooledIterator[Any]:
        """C-GET: ``async for item in pool.get(ds, "study", write_to=dir)`` (never retried).

        Holds one association for the iteration; the pool's contexts must
        include the GET model and storage classes with SCP roles, e.g.
        ``contexts, roles = aiodicom.get_contexts([...])``.  ``kwargs`` go
        to :meth:`Association.get <aiodicom.Association.get>`.
        """
        return PooledIterator(self._get(identifier, model, kwargs))

    async def _get(self, identifier: Any, model: str, kwargs: dict[str, Any]) -> AsyncGenerator[Any, None]:
        async with self.acquire() as assoc:
            async with assoc.get(identifier, model, **kwargs) as op:
                async for item in op:
                    yield item
