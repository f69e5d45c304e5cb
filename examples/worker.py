"""A demo worker: processes jobs, and crashes now and then (the supervisor restarts it)."""

import os
import random
import signal
import sys
import threading

stop = threading.Event()
signal.signal(signal.SIGINT, lambda *_: stop.set())
me = os.environ.get("FORKWELL_INSTANCE", "worker")
crash_after = random.randint(4, 10)
for job in range(1, 1_000_000):
    if stop.wait(0.5):
        print(f"{me}: asked to stop, finishing cleanly", flush=True)
        sys.exit(0)
    print(f"{me}: processed job {job}", flush=True)
    if job == crash_after:
        print(f"{me}: oops, crashing on job {job}", file=sys.stderr, flush=True)
        sys.exit(1)
