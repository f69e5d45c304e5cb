"""The core: the platform layer and the process machinery every feature stands on.

Rule (checked by ``tests/test_layers.py``): modules here import only each
other, :mod:`forkwell._exceptions` and the standard library.  The core is what
``forkwell init``, ``run()``, the daemon and the supervisor need to run, so it
stays standard-library only: it must work as PID 1 in a minimal container.

This ``__init__`` imports nothing, so that ``forkwell ps`` importing one small
module of the core does not pay for the rest.  The rooms:

=================  ============================================================
``_sys``           platform: pidfds, prctl, close_range, poll; capability flags
``_clock``         time, read and waited for through one seam (tests install a fake clock)
``_proc``          the one ``/proc/PID/stat`` reader, and what is built on it
``_status``        how a process ended: decoded and said once
``_state``         the one guard of every state machine
``_files``         the one tail of a file
``_duration``      durations and signal names, as every command and config spell them
``_process``       ``spawn()`` and ``Process``: one child, its pidfd, its tree
``_tree``          finding and ending a whole process tree (the cookie, /proc)
``_reaper``        ``Reaper`` and ``fork()``: reap exactly one's own children
``_driver``        the run loop shared by ``run()`` and ``forkwell timeout``
``_readiness``     readiness specs (``exec``, ``tcp:``...) and a TCP probe
``_notify``        the sd_notify protocol, both sides
=================  ============================================================
"""
