"""``warden.testing.FakeUpstream`` in a process of its own, for the calibration row.

    python benchmarks/proxy/fake_launcher.py PORT_FILE [--reply TEXT]

Starts the project's fake upstream (uvicorn in a thread of this process, on a port the OS
picks), writes its port to ``PORT_FILE`` and serves until SIGTERM. One process, one event
loop: the fake's own design, measured as it is. The benchmark's upstream is
``upstream.py``; this row shows why (see its docstring).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from warden.testing import FakeReply, FakeUpstream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port_file")
    parser.add_argument("--reply", default="ok")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeUpstream(default=FakeReply(text=args.reply)) as fake:
        Path(args.port_file).write_text(str(fake.port))
        while not stop.wait(5.0):
            # It records every request (headers and body) for tests; a benchmark sends
            # hundreds of thousands, so forget them as it goes.
            fake.reset()


if __name__ == "__main__":
    main()
