"""A real Spark Connect server for the tests: pyspark's own ``SparkConnectServer`` started with
``spark-submit`` on a free 127.0.0.1 port, requiring a generated bearer token, stopped by pid.

The server is its own process with its own driver JVM (``local[2]`` by default), as a user's
Connect endpoint is; a client reaches it with :meth:`ConnectServer.url`.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

from .local_server import free_port, wait_until_listening


class ConnectServer:
    """``spark-submit --class ...SparkConnectServer`` with ``conf`` and ``env`` (added to this
    process's environment: a local master's Python workers inherit it), logging into
    ``folder``."""

    def __init__(self, folder: str, master: str = "local[2]", conf: dict | None = None,
                 env: dict | None = None):
        import pyspark
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.log = os.path.join(folder, "connect-server.log")
        settings = {"spark.connect.grpc.binding.address": "127.0.0.1",
                    "spark.connect.grpc.binding.port": str(self.port),
                    "spark.connect.authenticate.token": self.token,
                    "spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1",
                    "spark.sql.shuffle.partitions": "2",
                    "spark.executorEnv.PYSPARK_PYTHON": sys.executable, **(conf or {})}
        submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
        command = [submit, "--master", master, "--name", "sparknet_ml tests' Connect server",
                   *(x for key, value in settings.items() for x in ("--conf", f"{key}={value}")),
                   "--class", "org.apache.spark.sql.connect.service.SparkConnectServer"]
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
               **(env or {})}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        wait_until_listening(self, "the Connect server", 120, 0.2)

    def url(self) -> str:
        """The ``sc://`` URL with the server's token (``localhost``: gRPC sends a token
        without TLS only to a local address)."""
        return f"sc://localhost:{self.port}/;token={self.token}"

    def stop(self) -> None:
        """Stop the server and its JVM's children (by pid: the process group it leads)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
