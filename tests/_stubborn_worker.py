"""A worker process that will not close, for the nanny's escalation tests.

It reports an address like a real worker, then ignores stdin and SIGINT, and
ignores SIGTERM too unless ``STUBBORN_HONOURS_SIGTERM=1``: only SIGKILL (or
SIGTERM, when honoured) ends it. Plain stdlib, so that nothing in it can
close by accident.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("STUBBORN_HONOURS_SIGTERM") != "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stubborn worker ignores its stdin", file=sys.stderr, flush=True)
    print(
        json.dumps({"address": f"fake://127.0.0.1:{os.getpid()}", "pid": os.getpid()}), flush=True
    )
    while True:
        time.sleep(3600)
