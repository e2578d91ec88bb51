"""A Spark standalone cluster (one master, n workers) on 127.0.0.1, started from the scripts of
the pip-installed pyspark, and stopped by the pids it started.

Used by the ``standalone_cluster`` fixture of conftest.py. Every daemon runs in a session (and
so a process group) of its own, with its logs, pid files, work and local directories and an
empty SPARK_CONF_DIR under ``root``; the executors a worker launches inherit its process group.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from pyspark.find_spark_home import _find_spark_home

# Variables a developer's shell may set that would change what the daemons or jobs run.
_SCRUBBED = ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYSPARK_SUBMIT_ARGS",
             "SPARK_CONF_DIR", "SPARK_MASTER_HOST", "SPARK_MASTER_PORT", "SPARK_WORKER_CORES",
             "SPARK_WORKER_MEMORY", "SPARK_WORKER_OPTS", "SPARK_MASTER_OPTS", "SPARK_DAEMON_JAVA_OPTS",
             "HADOOP_CONF_DIR", "YARN_CONF_DIR")


def spark_home() -> str:
    """SPARK_HOME of the pip-installed pyspark (the package folder)."""
    return _find_spark_home()


def free_port() -> int:
    """A port free on 127.0.0.1 now (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch_json(url: str, timeout: float = 2.0) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(url, timeout=timeout) as response:
        return json.load(response)


def _process_group(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


class StandaloneCluster:
    """A master and ``workers`` workers of ``cores`` cores and ``memory`` each, on 127.0.0.1."""

    def __init__(self, root: str, workers: int = 2, cores: int = 1, memory: str = "2g"):
        self.root = os.path.abspath(root)
        self.workers, self.cores, self.memory = workers, cores, memory
        self.spark_home = spark_home()
        self.port, self.webui_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.webui_url = f"http://127.0.0.1:{self.webui_port}"
        self.conf_dir = os.path.join(self.root, "conf")  # empty: no spark-defaults.conf
        os.makedirs(self.conf_dir, exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        self._logs = []

    def env(self, **extra: str) -> dict:
        """The environment of the daemons, and of spark-submit run against this cluster."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(SPARK_HOME=self.spark_home, SPARK_LOCAL_IP="127.0.0.1",
                   SPARK_CONF_DIR=self.conf_dir)
        env.update(extra)
        return env

    def submit(self, *args: str, cwd: str, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
        """Run ``spark-submit --master <this cluster> <args>`` in ``cwd`` (client mode, driver
        on 127.0.0.1, no UI, the driver's local directory under ``cwd``); capture its output."""
        command = [os.path.join(self.spark_home, "bin", "spark-submit"),
                   "--master", self.master_url, "--conf", "spark.driver.host=127.0.0.1",
                   "--conf", "spark.ui.enabled=false",
                   "--conf", f"spark.local.dir={os.path.join(cwd, 'driver-local')}", *args]
        return subprocess.run(command, cwd=cwd, env=self.env(**(env or {})), text=True,
                              capture_output=True, timeout=timeout)

    def _start(self, name: str, cls: str, *args: str, **env: str) -> None:
        home = os.path.join(self.root, name)
        dirs = {key: os.path.join(home, sub) for key, sub in (
            ("SPARK_LOG_DIR", "logs"), ("SPARK_PID_DIR", "pids"), ("SPARK_WORKER_DIR", "work"),
            ("SPARK_LOCAL_DIRS", "local"))}
        for path in dirs.values():
            os.makedirs(path, exist_ok=True)
        log = open(os.path.join(dirs["SPARK_LOG_DIR"], f"{name}.out"), "wb")
        self._logs.append(log)
        command = [os.path.join(self.spark_home, "bin", "spark-class"), cls, *args]
        if cls.endswith(".Worker"):
            command += ["--work-dir", dirs["SPARK_WORKER_DIR"]]
        # spark-class execs the JVM, so the pid is the JVM's and the session its process group.
        self.processes.append(subprocess.Popen(
            command, cwd=home, env=self.env(**dirs, **env), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, timeout: float = 120.0) -> "StandaloneCluster":
        """Start the master and the workers; return once the master counts them all ALIVE."""
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.webui_port),
                    # no REST submission server: it would take the fixed port 6066
                    SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false")
        for i in range(self.workers):
            self._start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self.master_url,
                        "--host", "127.0.0.1", "--cores", str(self.cores), "--memory",
                        self.memory, "--webui-port", str(free_port()))
        deadline = time.monotonic() + timeout
        while True:
            dead = [p.args[1] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited while starting; logs under {self.root}")
            try:
                state = _fetch_json(f"{self.webui_url}/json/")
                alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
                if len(alive) >= self.workers:
                    return self
            except (OSError, ValueError):
                pass  # the UI is not up yet, or answered with an empty body while starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {self.workers} ALIVE workers after {timeout:.0f} s; "
                                   f"logs under {self.root}")
            time.sleep(0.5)

    def state(self) -> dict:
        """The master's /json/ view: workers, cores, active and completed applications."""
        return _fetch_json(f"{self.webui_url}/json/")

    def leftovers(self) -> list[str]:
        """'pid command' of every live process in the daemons' process groups, or whose command
        line or working directory lies under ``root`` (executors, their Python workers)."""
        groups = {p.pid for p in self.processes}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue  # a zombie holds nothing; its parent reaps it
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if (_process_group(int(entry)) in groups or self.root + os.sep in cmdline
                    or cwd == self.root or cwd.startswith(self.root + os.sep)):
                found.append(f"{entry} {cmdline[:200]}")
        return found

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM the daemons' process groups (workers first), SIGKILL what is left after
        ``timeout``; return :meth:`leftovers` (empty when everything is gone)."""
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)  # executors shut down after their worker
        for process in self.processes:
            # Only a group that still has members: an empty group's id may be reused.
            if any(_process_group(int(line.split()[0])) == process.pid
                   for line in self.leftovers()):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for log in self._logs:
            log.close()
        time.sleep(0.5)
        return self.leftovers()
