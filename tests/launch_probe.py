"""A process of a launched job for tests/test_launch.py: ``python -m tests.launch_probe MODE``.

``follower-fails``: rank 1 exits 3 at once; rank 0 waits, and at SIGTERM (torchrun stopping it
because rank 1 failed) leaves 75 as a stopped process would.
"""

import os
import signal
import sys
import time

from edgetune.launch import record_exit


def main() -> int:
    if sys.argv[1] == "follower-fails":
        if os.environ["RANK"] == "1":
            return 3
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(record_exit(75)))
        time.sleep(120)
    return record_exit(0)


if __name__ == "__main__":
    sys.exit(main())
