"""The supervisor's children: their exits, reaping, and ending their whole trees.

Each child's pidfd is registered with the loop; its exit runs the
instance's callback, which spawns the replacement in the same loop
iteration.  SIGCHLD (delivered through asyncio's wake-up fd, not handled in
signal context) reaps orphans re-parented to the supervisor, which is a
subreaper (or PID 1), without stealing the statuses of its own children.

Stopping an instance ends its whole tree (every process carrying its cookie,
``setsid``'d and double-forked ones included; see :mod:`forkwell._core._tree`).
When many trees are ended at once, one scan of ``/proc`` serves them all.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core import _proc, _tree
from .._core._status import waitid_returncode
from ._loop import resolve

if TYPE_CHECKING:
    import asyncio

    from .._core._process import Process
    from ._preloop import Loops
    from ._watchdog import Watchdog

KILL_GRACE = 5.0  # after SIGKILL, how long to wait for a tree to vanish
POLL_UNPINNED = 0.05  # seconds between scans for members we hold no pidfd for


class Tracker:
    """Every child the supervisor spawned, by pid: each exit reaches its callback once."""

    def __init__(self, loops: Loops, watchdog: Watchdog) -> None:
        self._loops = loops
        self._watchdog = watchdog
        self._tracked: dict[int, tuple[Process, Callable[[], None]]] = {}

    def track(self, proc: Process, on_exit: Callable[[], None]) -> None:
        self._tracked[proc.pid] = (proc, on_exit)
        fd = proc.fileno()
        if fd >= 0:
            self._loops.loop.add_reader(fd, self._pidfd_readable, proc.pid)

    def untrack(self, proc: Process) -> None:
        entry = self._tracked.get(proc.pid)
        if entry is not None and entry[0] is proc:
            del self._tracked[proc.pid]
            fd = proc.fileno()
            if fd >= 0:
                self._loops.loop.remove_reader(fd)

    def _pidfd_readable(self, pid: int) -> None:
        entry = self._tracked.get(pid)
        if entry is None:
            return
        proc, on_exit = entry
        # One-shot: a readable pidfd stays readable; the callback reaps.
        if proc.fileno() >= 0:  # none without pidfds: SIGCHLD's reap() calls us
            self._loops.loop.remove_reader(proc.fileno())
        on_exit()

    def reap(self) -> None:
        """Reap every exited child: ours are handed to their instance, adopted orphans dropped.

        ``WNOWAIT`` peeks first, so a child we track is reaped here only to
        give its status to its :class:`Process`; nothing else reaps it behind
        its back.  The exits found are handed on only after the loop: handing
        one on spawns its replacement, and a program that exits at once would
        otherwise keep this loop, and the whole event loop, busy for ever (no
        control socket, no SIGTERM).
        """
        exited: list[int] = []
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is None or info.si_pid == 0:
                break
            pid = info.si_pid
            try:
                done = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                continue
            if done is None:
                continue
            entry = self._tracked.get(pid)
            if entry is not None:
                entry[0]._set_reaped(waitid_returncode(done))
                exited.append(pid)
            elif pid == self._watchdog.pid:
                self._watchdog.returncode = waitid_returncode(done)
        for pid in exited:
            self._pidfd_readable(pid)


class TreeEnder:
    """Ends process trees from the loop; one pass over /proc answers a loop iteration's scans."""

    def __init__(self, loops: Loops, note: Callable[[str], None]) -> None:
        self._loops = loops
        self._note = note
        self._queue: list[tuple[str, tuple[int, ...], asyncio.Future[Any]]] = []
        # True while we are the subreaper (run()): every descendant of every
        # program then stays in our own process subtree, so scans walk it
        # instead of reading all of /proc.
        self.own_subtree = False

    async def end_tree(
        self, tree: _tree.Tree, sig: int, grace: float, *, include_root: bool = True
    ) -> None:
        """Async :func:`forkwell._core._tree.terminate_tree`: ``sig`` to all, ``grace``, SIGKILL."""
        loop = self._loops.aio
        deadline = loop.time() + max(grace, 0.0)
        while True:
            members = await self._members(tree, include_root)
            if not members:
                tree.reap_adopted()
                return
            tree.signal(sig, members, only_new=True)
            gone = await self._wait_members(tree, members, deadline)
            tree.reap_adopted()
            if not gone:
                break
        await self._kill(tree, include_root)
        tree.reap_adopted()

    async def _kill(self, tree: _tree.Tree, include_root: bool) -> None:
        """The grace is over: SIGKILL until the tree is gone, for KILL_GRACE at most."""
        loop = self._loops.aio
        kill_deadline = loop.time() + KILL_GRACE
        while True:
            members = await self._members(tree, include_root)
            if not members:
                return
            tree.signal(signal.SIGKILL, members)
            await self._wait_members(tree, members, kill_deadline)
            tree.reap_adopted()
            if loop.time() >= kill_deadline:
                self._note(f"could not kill pids {sorted(members)} (uninterruptible?)")
                return

    async def _members(self, tree: _tree.Tree, include_root: bool) -> dict[int, _proc.ProcStat]:
        if not tree.may_have_descendants():
            # The kernel allocated no pid after the root: it has no descendants.
            if not include_root:
                return {}
            info = _proc.read_stat(tree.root)
            return {tree.root: info} if info is not None and info.alive else {}
        loop = self._loops.aio
        fut: asyncio.Future[dict[int, _proc.ProcStat]] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._run_scans)
        self._queue.append((tree.token, (tree.root,) if include_root else (), fut))
        members = await fut
        if not include_root:
            members.pop(tree.root, None)
        return members

    def _run_scans(self) -> None:
        """One pass over /proc answers every tree scan requested in this loop iteration."""
        queue, self._queue = self._queue, []
        wanted = {token: roots for token, roots, _ in queue}
        try:
            found = _tree.walk_subtree(wanted) if self.own_subtree else _tree.find_trees(wanted)
        except Exception as exc:  # answer the waiters rather than hang them
            for _, _, fut in queue:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for token, _, fut in queue:
            if not fut.done():
                fut.set_result(dict(found.get(token, {})))

    async def _wait_members(
        self, tree: _tree.Tree, members: dict[int, _proc.ProcStat], deadline: float
    ) -> bool:
        """Wait for the signalled ``members`` to exit; False once ``deadline`` passed.

        A member without a pidfd (none on this kernel, FORKWELL_NO_PIDFD=1,
        or no fd free) wakes nobody: then wait a poll interval and let the
        caller scan again, rather than return at once and spin.
        """
        fds = [fd for pid, (fd, _) in tree.pinned().items() if pid in members]
        if len(fds) == len(members):
            return await self._wait_fds(fds, deadline)
        loop = self._loops.aio
        until = min(deadline, loop.time() + POLL_UNPINNED)
        if fds:
            await self._wait_fds(fds, until)
        else:
            import asyncio  # running in its loop: imported already

            await asyncio.sleep(max(0.0, until - loop.time()))
        return loop.time() < deadline

    async def _wait_fds(self, fds: list[int], deadline: float) -> bool:
        """Wait until every pidfd in ``fds`` is readable (exited), or ``deadline``."""
        pending = set(fds)
        if not pending:
            return True
        loop = self._loops.aio
        fut: asyncio.Future[None] = loop.create_future()

        def readable(fd: int) -> None:
            pending.discard(fd)
            loop.remove_reader(fd)
            if not pending and not fut.done():
                fut.set_result(None)

        for fd in pending:
            loop.add_reader(fd, readable, fd)
        timer = loop.call_at(deadline, resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            for fd in pending:
                loop.remove_reader(fd)
        return not pending
