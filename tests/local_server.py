"""What the tests' own servers share: a free 127.0.0.1 port, and waiting until one listens."""
from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(server, name: str, timeout: float, poll: float) -> None:
    """Return once ``server.port`` on 127.0.0.1 accepts connections; if ``server.process``
    exits or ``timeout`` seconds pass first, ``server.stop()`` and raise a RuntimeError with
    the end of ``server.log``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                with open(server.log) as f:
                    raise RuntimeError(f"{name} did not start: {f.read()[-3000:]}") from None
            time.sleep(poll)
