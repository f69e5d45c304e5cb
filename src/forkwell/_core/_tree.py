"""Finding and ending a command's whole process tree.

Mechanism (Linux), and why:

* Every process forkwell spawns gets an environment *cookie*,
  ``FORKWELL_TREE=<random token>``.  Children inherit the environment, so a
  descendant that left the process group (``setsid``), double-forked into a
  daemon or was re-parented to init still carries it, and a scan of
  ``/proc/*/environ`` finds it.  A process group would lose all of these.
* Descendants of a member are members too (closure over ``PPid``), which also
  catches a child that exec'd with a cleared environment while its parent lives.
* Each member is pinned with a pidfd, and its start time re-checked after the
  pidfd is opened, so a signal never reaches a recycled PID.
* Scanning ``/proc`` costs ~0.2-0.5 ms; it is skipped when the kernel's last
  allocated PID is still the child's own (``/proc/loadavg``): then the command
  cannot have created any descendant.

Limits (documented in docs/design.md): a descendant that both clears its
environment *and* is re-parented away from the tree (``env -i setsid ...`` after
its parent died) is invisible; so is a process whose environ we may not read (a
setuid program, when we are not root), unless its parent is still a member.
cgroup v2 ``cgroup.kill`` would close these gaps where a writable cgroup is
delegated; process groups are the fallback where ``/proc`` is missing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import time
from collections.abc import Iterable

from . import _clock, _sys
from ._proc import ProcStat, is_gone, iter_pids, pin, read_small, read_stat

COOKIE_VAR = "FORKWELL_TREE"
POLL = 0.05  # seconds between scans while some signalled process has no pidfd to wake us


class TreeUnreadable(OSError):
    """``/proc`` could not be read (EMFILE, ENFILE): the members are unknown, not gone.

    Raised by :meth:`Tree.members`; a caller ending the tree falls back to
    :meth:`Tree.signal_blind` and scans again once it has waited (and reaped,
    which frees fds), rather than read "unknown" as "nobody is left".
    """


def new_token() -> str:
    # os.urandom rather than secrets: `secrets` costs ~2.5 ms of CLI start-up.
    return os.urandom(8).hex()


_PREFIX = f"{COOKIE_VAR}=".encode()


def cookie_value(inherited: str | None, token: str) -> str:
    """The cookie for a new tree nested in ``inherited`` (a run inside a run).

    Keeping the outer tokens means an outer run still finds the inner run's
    descendants, even those that escaped by double-forking.
    """
    return f"{inherited}:{token}" if inherited else token


def tokens_in_environ(env: bytes) -> list[bytes]:
    if env.startswith(_PREFIX):
        start = len(_PREFIX)
    else:
        at = env.find(b"\0" + _PREFIX)
        if at < 0:
            return []
        start = at + 1 + len(_PREFIX)
    end = env.find(b"\0", start)
    value = env[start:] if end < 0 else env[start:end]
    return value.split(b":")


def find_tree(token: str, roots: Iterable[int] = (), not_before: int = 0) -> dict[int, ProcStat]:
    """Every live (non-zombie) process of the tree marked with ``token``.

    ``roots`` are PIDs known to belong (the direct child), included even if
    their environment no longer shows the cookie.  Processes that started
    before ``not_before`` (boot ticks, taken before the root was spawned)
    cannot be descendants: their environment is not even read, which halves
    the cost of a scan on a machine running thousands of processes.
    """
    return find_trees({token: tuple(roots)}, not_before).get(token, {})


def find_trees(
    wanted: dict[str, tuple[int, ...]], not_before: int = 0
) -> dict[str, dict[int, ProcStat]]:
    """:func:`find_tree` for many tokens (token -> roots) in one pass over ``/proc``."""
    if not wanted or not _sys.HAVE_PROC:
        return {}
    needles = {token.encode(): token for token in wanted}
    me = os.getpid()
    infos: dict[int, ProcStat] = {}
    members: dict[str, set[int]] = {token: set(roots) for token, roots in wanted.items()}
    for pid in iter_pids():
        if pid == me:
            continue
        info = read_stat(pid)
        if info is None or not info.alive or info.starttime < not_before:
            continue
        infos[pid] = info
        _match_cookies(info, needles, members)
    children: dict[int, list[int]] = {}
    for pid, info in infos.items():
        children.setdefault(info.ppid, []).append(pid)
    return close_over_children(members, infos, children)


def walk_subtree(wanted: dict[str, tuple[int, ...]]) -> dict[str, dict[int, ProcStat]]:
    """:func:`find_trees` for a subreaper or PID 1: walk our own process subtree only.

    A subreaper adopts every orphan below it, so each descendant of each tree
    is still somewhere under us; the cost grows with the size of our own
    subtree, not with the number of processes on the machine.  Needs
    ``/proc/PID/task/TID/children`` (CONFIG_PROC_CHILDREN).
    """
    needles = {token.encode(): token for token in wanted}
    members: dict[str, set[int]] = {token: set(roots) for token, roots in wanted.items()}
    infos: dict[int, ProcStat] = {}
    children: dict[int, list[int]] = {}
    me = os.getpid()
    todo = [me]
    threads = {me: 2}  # our own threads: always list them all
    while todo:
        pid = todo.pop()
        kids = _children(pid, threads.get(pid, 1))
        children[pid] = kids
        for kid in kids:
            info = read_stat(kid)
            if info is None:
                continue
            threads[kid] = info.threads
            todo.append(kid)
            if not info.alive:
                continue
            infos[kid] = info
            _match_cookies(info, needles, members)
    return close_over_children(members, infos, children)


HAVE_CHILDREN_FILE = _sys.HAVE_PROC and os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children(pid: int, threads: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/TID/children)."""
    try:
        tids = [str(pid)] if threads <= 1 else os.listdir(f"/proc/{pid}/task")
    except OSError as exc:
        if is_gone(exc):
            return []
        raise
    out: list[int] = []
    for tid in tids:
        data = read_small(f"/proc/{pid}/task/{tid}/children")
        if data:
            out.extend(map(int, data.split()))
    return out


def trees_below(roots: dict[str, int]) -> dict[str, dict[int, ProcStat]]:
    """For a subreaper: each tree's live members (token -> root pid given), in one walk.

    What ``ps`` needs, at the least cost: a root's descendants are members
    through the children files alone (no environment is read), and the
    cookie is read only for the processes found below us outside any root,
    which are the orphans we adopted (and our own helpers).  A stop uses
    :func:`walk_subtree`, which checks every process's cookie.
    """
    owner = {root: token for token, root in roots.items()}
    needles = {token.encode(): token for token in roots}
    out: dict[str, dict[int, ProcStat]] = {token: {} for token in roots}
    me = os.getpid()
    todo: list[tuple[int, str | None]] = [(kid, owner.get(kid)) for kid in _children(me, 2)]
    while todo:
        pid, token = todo.pop()
        info = read_stat(pid)
        if info is None:
            continue
        if token is None and info.alive:
            tokens = tokens_in_environ(read_environ(pid, info.ppid))
            token = next((needles[t] for t in tokens if t in needles), None)
        if token is not None and info.alive:
            out[token][pid] = info
        todo.extend((kid, token) for kid in _children(pid, info.threads))
    return out


_EXEC_WINDOW = 0.02  # seconds: an execve() maps the new environment well within this
_KTHREADD = 2


def read_environ(pid: int, ppid: int) -> bytes:
    """``/proc/PID/environ``; b"" if the process is gone or not ours to read.

    Any other failure (EMFILE) raises: an unread cookie would drop a member.

    A process inside ``execve()`` shows an empty environment for a moment
    (the new image's is not mapped yet): a descendant caught exec'ing, say
    ``setsid`` turning into ``sleep``, would look cookie-less and escape the
    scan.  An empty read is therefore retried for up to ``_EXEC_WINDOW``;
    kernel threads (children of kthreadd), which never have one, are not.
    """
    deadline = 0.0
    while True:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError as exc:
            if is_gone(exc) or exc.errno in (errno.EACCES, errno.EPERM):
                return b""
            raise
        if env or ppid in (0, _KTHREADD) or pid == _KTHREADD:
            return env
        now = time.monotonic()
        if not deadline:
            deadline = now + _EXEC_WINDOW
        info = read_stat(pid)
        if now >= deadline or info is None or not info.alive:
            return env
        select.select([], [], [], 0.0005)


def _match_cookies(
    info: ProcStat, needles: dict[bytes, str], members: dict[str, set[int]]
) -> None:
    for tok in tokens_in_environ(read_environ(info.pid, info.ppid)):
        token = needles.get(tok)
        if token is not None:
            members[token].add(info.pid)


def close_over_children(
    members: dict[str, set[int]],
    infos: dict[int, ProcStat],
    children: dict[int, list[int]],
) -> dict[str, dict[int, ProcStat]]:
    """Each token's members plus, transitively, their live children."""
    out: dict[str, dict[int, ProcStat]] = {}
    for token, seeds in members.items():
        found = seeds & infos.keys()
        todo = list(found)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child in infos and child not in found:
                    found.add(child)
                    todo.append(child)
        out[token] = {pid: infos[pid] for pid in found}
    return out


class Tree:
    """The processes spawned under one cookie, and the means to end them all.

    ``root`` is the direct child; the owner reaps it (it has its own handle).
    Members that are *our* children (this process is a subreaper or PID 1) are
    reaped here, so ending a tree never leaves a zombie behind.
    """

    def __init__(self, token: str, root: int, not_before: int = 0) -> None:
        self.token = token
        self.root = root
        self.not_before = not_before
        # Set by a subreaper (or PID 1) that owns everything below it: then
        # the tree is found by walking our own subtree instead of all of /proc.
        self.own_subtree = False
        self.spawn_pid = root
        # pid -> (pidfd, starttime): processes already signalled and pinned.
        self._pinned: dict[int, tuple[int, int]] = {}
        # The current "round": which processes got which signal, so a rescan
        # during termination signals only newcomers.  Any other signal, or a
        # plain signal() call, starts a new round: an earlier `signal --tree USR1`
        # must never make a later stop skip anyone.
        self._round_sig: int | None = None
        self._round: set[tuple[int, int]] = set()
        # Some process signalled in this round has no pidfd (the scan could not
        # read /proc, or no fd was free to pin it): nothing wakes a waiter when
        # it exits, so whoever ends the tree scans again every POLL seconds.
        self.unwaited = False
        self._blind_round: set[int] = set()  # signals sent blind in this round

    # -- discovery -----------------------------------------------------------

    def may_have_descendants(self) -> bool:
        """False only when it is certain the root never created a process."""
        last = _sys.last_pid()
        return last is None or last != self.spawn_pid

    def members(self, include_root: bool = True) -> dict[int, ProcStat]:
        """The live members, from a scan of ``/proc``; raises :class:`TreeUnreadable`."""
        roots = (self.root,) if include_root else ()
        try:
            if self.own_subtree:
                found = walk_subtree({self.token: tuple(roots)}).get(self.token, {})
            else:
                found = find_tree(self.token, roots, self.not_before)
        except OSError as exc:
            raise TreeUnreadable(exc.errno, f"cannot read /proc: {exc.strerror}") from exc
        if not include_root:
            found.pop(self.root, None)
        return found

    # -- signalling ----------------------------------------------------------

    def _pin(self, info: ProcStat) -> int | None:
        """Open a pidfd for ``info`` and verify it is still the same process.

        None if it is gone; -1 if no fd was free for the pidfd.
        """
        held = self._pinned.get(info.pid)
        if held is not None:
            if held[1] == info.starttime:
                return held[0]
            # The pid was recycled inside the tree; forget the old pin.
            os.close(held[0])
            del self._pinned[info.pid]
        try:
            fd = pin(info)
        except OSError:
            # No fd for a pidfd (EMFILE): the caller signals by pid, as where
            # the kernel has no pidfds; the scan has just seen this start time.
            self.unwaited = True
            return -1
        if fd is None:
            return None
        self._pinned[info.pid] = (fd, info.starttime)
        return fd

    def signal(
        self, sig: int, members: dict[int, ProcStat] | None = None, *, only_new: bool = False
    ) -> list[int]:
        """Send ``sig`` to every member; return the pidfds of those signalled.

        With ``only_new``, members that already got ``sig`` in the current
        round (see ``__init__``) are skipped: some programs treat a second
        SIGINT or SIGTERM as "abort now".
        """
        if members is None:
            try:
                members = self.members()
            except TreeUnreadable:
                return self.signal_blind(sig, only_new=only_new)
        self._start_round(sig, only_new)
        fds: list[int] = []
        for info in members.values():
            key = (info.pid, info.starttime)
            if only_new and key in self._round:
                continue
            self._round.add(key)
            fd = self._pin(info)
            if fd is None or fd < 0:
                if fd is not None or not _sys.HAVE_PIDFD:
                    self.unwaited = True  # no pidfd will say when it exits
                    try:
                        os.kill(info.pid, sig)
                    except OSError:
                        pass
                continue
            if _sys.pidfd_signal(fd, sig):
                fds.append(fd)
                if sig not in (signal.SIGKILL, signal.SIGCONT):
                    # A stopped process would hold the signal pending forever.
                    _sys.pidfd_signal(fd, signal.SIGCONT)
        return fds

    def signal_blind(self, sig: int, *, only_new: bool = False) -> list[int]:
        """No scan: ``sig`` to the root's process group and to every member pinned before.

        What reaches the tree when ``/proc`` cannot be read: the group is the
        one set of processes known without it (who left it is found by the
        next scan that succeeds).  With ``only_new``, once per round.
        """
        self._start_round(sig, only_new)
        self.unwaited = True
        if only_new and sig in self._blind_round:
            return []
        self._blind_round.add(sig)
        with contextlib.suppress(OSError):
            os.killpg(self.root, sig)
        fds = [fd for fd, _ in self._pinned.values() if _sys.pidfd_signal(fd, sig)]
        if sig not in (signal.SIGKILL, signal.SIGCONT):
            for fd in fds:
                _sys.pidfd_signal(fd, signal.SIGCONT)
        return fds

    def _start_round(self, sig: int, only_new: bool) -> None:
        if not only_new or sig != self._round_sig:
            self._round_sig = sig
            self._round = set()
            self._blind_round = set()
            self.unwaited = False

    def new_round(self) -> None:
        """Forget who was signalled: the next ``only_new`` signal reaches everyone."""
        self._round_sig = None
        self._round = set()
        self._blind_round = set()
        self.unwaited = False

    def scan_or_blind(self, sig: int, include_root: bool, *, only_new: bool) -> tuple[
        dict[int, ProcStat] | None, list[int]
    ]:
        """Scan and signal the members (``only_new`` as in :meth:`signal`).

        Returns the members (None when ``/proc`` could not be read, and the
        signal went out blind) and the pidfds signalled.
        """
        try:
            members = self.members(include_root=include_root)
        except TreeUnreadable:
            return None, self.signal_blind(sig, only_new=only_new)
        if not members:
            return members, []
        return members, self.signal(sig, members, only_new=only_new)

    def settle(self, fds: list[int], deadline: float) -> bool:
        """Wait for ``fds`` to exit; False once ``deadline`` passed.

        With :attr:`unwaited` members (no pidfd wakes us for them) it waits
        a :data:`POLL` at most, so that the caller scans again; and it
        releases the pidfds of the members that exited (an EMFILE may
        have been for want of those very fds).
        """
        if self.unwaited:
            self.wait_gone(fds, min(deadline, _clock.monotonic() + POLL), pause=True)
        else:
            self.wait_gone(fds, deadline)
        self.reap_adopted()
        self.release_exited()
        return _clock.monotonic() < deadline

    def release_exited(self) -> None:
        """Close the pidfds of the members that have exited (reap them first)."""
        exited = set(_sys.wait_ready([fd for fd, _ in self._pinned.values()], 0))
        for pid, (fd, _) in list(self._pinned.items()):
            if fd in exited:
                os.close(fd)
                del self._pinned[pid]

    def pinned(self) -> dict[int, tuple[int, int]]:
        return dict(self._pinned)

    def wait_gone(self, fds: list[int], deadline: float, *, pause: bool = False) -> bool:
        """Wait until every pidfd in ``fds`` reports exit, or ``deadline``.

        ``pause``: wait until ``deadline`` even with no fd to wait for.
        """
        pending = set(fds)
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLIN)
        while pending or pause:
            if not pending:
                _clock.poll(poller, max(0.0, deadline - _clock.monotonic()))
                return False
            remaining = deadline - _clock.monotonic()
            if remaining <= 0:
                return False
            for fd, _ in _clock.poll(poller, remaining):
                pending.discard(fd)
                poller.unregister(fd)
        return True

    def kill_all(self, timeout: float = 5.0, include_root: bool = False) -> bool:
        """SIGKILL every member until none is left; True when the tree is empty.

        The root is left to its owner (who reaps it) unless ``include_root``.
        """
        deadline = _clock.monotonic() + timeout
        while True:
            members, fds = self.scan_or_blind(signal.SIGKILL, include_root, only_new=False)
            if members == {}:
                self.reap_adopted()
                return True
            if not self.settle(fds, deadline):
                try:
                    return not self.members(include_root=include_root)
                except TreeUnreadable:
                    return False

    def reap_adopted(self) -> None:
        """Reap members that were re-parented to us (we are a subreaper or PID 1)."""
        for pid, (fd, _) in list(self._pinned.items()):
            if pid == self.root:
                continue
            try:
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                pass  # not our child: its own parent or init reaps it
            except OSError:
                pass

    def close(self) -> None:
        self.reap_adopted()
        for fd, _ in self._pinned.values():
            os.close(fd)
        self._pinned.clear()


def terminate_tree(
    tree: Tree,
    stop_signal: int = signal.SIGTERM,
    grace: float = 5.0,
    include_root: bool = True,
) -> None:
    """Blocking: ``stop_signal`` to the whole tree, ``grace`` seconds, then SIGKILL.

    Returns early once every member is gone.  Processes forked during the grace
    period are found by a rescan each time the known ones have all exited.
    """
    deadline = _clock.monotonic() + max(grace, 0.0)
    tree.new_round()
    while True:
        members, _ = tree.scan_or_blind(stop_signal, include_root, only_new=True)
        if members == {}:
            break
        known = tree.pinned()
        fds = [fd for fd, _ in known.values()] if members is None else [
            known[pid][0] for pid in members if pid in known
        ]
        if not tree.settle(fds, deadline):
            break
    tree.kill_all(include_root=include_root)
