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
from ._proc import ProcStat, iter_pids, pin, read_small, read_stat

COOKIE_VAR = "FORKWELL_TREE"


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
    except OSError:
        return []
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
    """``/proc/PID/environ``; b"" if unreadable or the process is gone.

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
        except OSError:
            return b""
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
        self._blind = False  # the last scan failed for want of fds (EMFILE)

    # -- discovery -----------------------------------------------------------

    def may_have_descendants(self) -> bool:
        """False only when it is certain the root never created a process."""
        last = _sys.last_pid()
        return last is None or last != self.spawn_pid

    def members(self, include_root: bool = True) -> dict[int, ProcStat]:
        roots = (self.root,) if include_root else ()
        try:
            if self.own_subtree:
                found = walk_subtree({self.token: tuple(roots)}).get(self.token, {})
            else:
                found = find_tree(self.token, roots, self.not_before)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            # No fd to read /proc with: the next signal goes to the root's
            # process group, the one tree known without /proc.
            self._blind = True
            return {}
        if include_root and self.root not in found and read_stat(self.root) is None:
            # /proc says nothing of a root that kill(0) still reaches: the
            # reads failed (EMFILE swallowed by read_stat), not the process.
            with contextlib.suppress(OSError):
                os.kill(self.root, 0)
                self._blind = True
        if not include_root:
            found.pop(self.root, None)
        return found

    # -- signalling ----------------------------------------------------------

    def _pin(self, info: ProcStat) -> int | None:
        """Open a pidfd for ``info`` and verify it is still the same process."""
        held = self._pinned.get(info.pid)
        if held is not None:
            if held[1] == info.starttime:
                return held[0]
            # The pid was recycled inside the tree; forget the old pin.
            os.close(held[0])
            del self._pinned[info.pid]
        fd = pin(info)
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
            members = self.members()
        if self._blind:
            self._blind = False
            with contextlib.suppress(OSError):
                os.killpg(self.root, sig)
        if not only_new or sig != self._round_sig:
            self._round_sig = sig
            self._round = set()
        fds: list[int] = []
        for info in members.values():
            key = (info.pid, info.starttime)
            if only_new and key in self._round:
                continue
            self._round.add(key)
            fd = self._pin(info)
            if fd is None:
                if not _sys.HAVE_PIDFD:
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

    def new_round(self) -> None:
        """Forget who was signalled: the next ``only_new`` signal reaches everyone."""
        self._round_sig = None
        self._round = set()

    def pinned(self) -> dict[int, tuple[int, int]]:
        return dict(self._pinned)

    def wait_gone(self, fds: list[int], deadline: float) -> bool:
        """Wait until every pidfd in ``fds`` reports exit, or ``deadline``."""
        pending = set(fds)
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLIN)
        while pending:
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
            members = self.members(include_root=include_root)
            if not members:
                self.reap_adopted()
                return True
            fds = self.signal(signal.SIGKILL, members)
            self.wait_gone(fds, deadline)
            self.reap_adopted()
            if _clock.monotonic() >= deadline:
                return not self.members(include_root=include_root)

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
        members = tree.members(include_root=include_root)
        if not members:
            break
        tree.signal(stop_signal, members, only_new=True)
        fds = [fd for pid, (fd, _) in tree.pinned().items() if pid in members]
        if not tree.wait_gone(fds, deadline):
            break
        tree.reap_adopted()
    tree.kill_all(include_root=include_root)
