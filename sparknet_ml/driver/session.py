"""What the driver side asks of a SparkSession, classic or Spark Connect, in one place.

Everything else on the driver side uses the DataFrame API alone (``mapInArrow``,
``cache``, ``collect``/``toArrow``, ``spark.conf``), which both kinds of session serve. The few
questions the DataFrame API cannot answer are answered here: through the JVM on a classic
session, through the session's settings on a Connect one.
"""
from __future__ import annotations

import contextlib
import os
import re

# Spark's defaults where a setting is unset.
_CONNECT_MESSAGE = "128m"  # spark.connect.grpc.maxInboundMessageSize
_UNITS = {"b": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40, "p": 2 ** 50}


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def setting(spark, key: str, default: str | None = None) -> str | None:
    """``key``'s value in the session (``spark.conf``, which falls back to the SparkConf the
    application started with), or ``default`` when it is unset. (A Connect server checks a
    default against the setting's type, so ``default`` is applied here, not sent.)"""
    value = spark.conf.get(key, None)
    return default if value is None else value


CRASH_REPORTS = "spark.sql.execution.pyspark.udf.faulthandler.enabled"
"""Spark's setting that returns a crashed Python worker's stderr with the task's error."""


def report_worker_crashes(spark) -> None:
    """Turn on :data:`CRASH_REPORTS` in ``spark`` unless the user set it (or its fallback
    ``spark.python.worker.faulthandler.enabled``): a task whose Caffe aborts (a CHECK failure,
    ``Not Implemented Yet``) then fails with glog's FATAL line, which the tasks write where
    Spark reads it back (:func:`sparknet_ml.tasks.environment.caffe_messages_to_spark`),
    instead of only "Python worker exited unexpectedly"."""
    if (setting(spark, CRASH_REPORTS) is None
            and setting(spark, "spark.python.worker.faulthandler.enabled") is None):
        spark.conf.set(CRASH_REPORTS, "true")


ENCRYPTION = "spark.sparknet.encryption.enabled"
"""``true`` seals the fit's state connections always, ``false`` never; unset: when Spark's
own traffic is encrypted (``spark.network.crypto.enabled`` or ``spark.ssl.enabled``)."""


STATE_SERVER = "spark.sparknet.stateServer"
"""``false``: a Spark Connect fit opens no connection from the executors to the client (its
state server); states go through Spark itself (:class:`~.exchange.CarriedStates`). Unset or
``true``: the client's state server."""


def uses_state_server(spark) -> bool:
    """Whether the fit's states go over the driver's state server (:data:`STATE_SERVER`).

    Raises
    ------
    ValueError
        For a value other than true or false, or false on a classic session (whose executors
        reach its driver already, and whose JVM would carry the states).
    """
    value = (setting(spark, STATE_SERVER) or "true").strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{STATE_SERVER} must be true or false, not {value!r}")
    if value == "false" and not is_connect(spark):
        raise ValueError(f"{STATE_SERVER}=false is for Spark Connect clients the executors "
                         "cannot reach; a classic session's executors reach its driver")
    return value == "true"


def encrypts_states(spark) -> bool:
    """Whether the fit seals its state connections with AES-GCM (:data:`ENCRYPTION`)."""
    asked = setting(spark, ENCRYPTION)
    if asked is not None:
        return asked.strip().lower() == "true"
    return any((setting(spark, key) or "").strip().lower() == "true"
               for key in ("spark.network.crypto.enabled", "spark.ssl.enabled"))


class Settings:
    """The session's settings as a read-only mapping with ``get(key, default)`` (what
    :func:`sparknet_ml.driver.columns.resolve_gpu` reads)."""

    def __init__(self, spark):
        self._spark = spark

    def get(self, key: str, default: str | None = None) -> str | None:
        """:func:`setting`."""
        return setting(self._spark, key, default)


def size_bytes(text: str) -> int:
    """Bytes in a Spark size setting: ``"512m"``, ``"2g"``; a bare number counts bytes.

    Raises
    ------
    ValueError
        When ``text`` is not a size.
    """
    found = re.fullmatch(r"\s*(\d+)\s*([bkmgtp]?)b?\s*", text.lower())
    if not found:
        raise ValueError(f"{text!r} is not a size (like 512m or 2g)")
    return int(found.group(1)) * _UNITS[found.group(2) or "b"]


def plan_bytes(spark) -> int | None:
    """The largest message a Spark Connect server takes (a plan, with the functions it
    ships), or None on a classic session (no such limit)."""
    if not is_connect(spark):
        return None
    return size_bytes(setting(spark, "spark.connect.grpc.maxInboundMessageSize",
                              _CONNECT_MESSAGE))


def callback_host(spark) -> str:
    """Where executors reach this Python process: ``spark.driver.host`` on a classic session;
    on Connect, ``SPARK_LOCAL_IP`` or this host's address (the client's, not the server's)."""
    if not is_connect(spark):
        return setting(spark, "spark.driver.host", "127.0.0.1")
    import socket
    return os.environ.get("SPARK_LOCAL_IP") or socket.gethostbyname(socket.gethostname())


def _master(spark) -> str:
    return setting(spark, "spark.master", "") or ""


def is_local(spark) -> bool:
    """Whether the session runs in one local JVM (``local``, ``local[N]``, ``local[N,F]``)."""
    master = _master(spark)
    return master == "local" or master.startswith("local[")


def max_task_failures(spark) -> int:
    """How often Spark runs a task before failing its job: F of ``local[N,F]``, 1 for other
    local masters, ``spark.task.maxFailures`` (default 4) on a cluster."""
    master = _master(spark)
    found = re.fullmatch(r"local\[[^,\]]+,\s*(\d+)\]", master)
    if found:
        return int(found.group(1))
    if is_local(spark):
        return 1
    return int(setting(spark, "spark.task.maxFailures", "4"))


def task_slots(spark) -> int | None:
    """Tasks the cluster can run at once now: Spark's own count (as its barrier check uses) on
    a classic session; on Connect, from the master (``local[N]``, ``local-cluster[E,C,M]``) or
    ``spark.executor.instances`` x ``spark.executor.cores`` / ``spark.task.cpus``, or None
    when the settings do not say (dynamic allocation)."""
    if not is_connect(spark):
        jsc = spark.sparkContext._jsc.sc()
        return jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile())
    master = _master(spark)
    cpus = int(setting(spark, "spark.task.cpus", "1"))
    if master == "local":
        return 1
    if found := re.fullmatch(r"local\[(\*|\d+)(,\s*\d+)?\]", master):
        return os.cpu_count() if found.group(1) == "*" else int(found.group(1))
    if found := re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master):
        return int(found.group(1)) * int(found.group(2)) // cpus
    instances, cores = (setting(spark, "spark.executor.instances"),
                        setting(spark, "spark.executor.cores"))
    if instances and cores:
        return int(instances) * int(cores) // cpus
    return None


def registration_wait(spark) -> float:
    """Seconds a barrier job waits for executors still registering:
    ``spark.scheduler.maxRegisteredResourcesWaitingTime`` on a cluster, 0 locally."""
    if is_local(spark):
        return 0.0
    text = setting(spark, "spark.scheduler.maxRegisteredResourcesWaitingTime", "30s")
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*", text)
    if not found:
        raise ValueError(f"spark.scheduler.maxRegisteredResourcesWaitingTime={text!r} is not "
                         "a duration")
    scale = {"ms": 1e-3, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}[found.group(2) or "s"]
    return float(found.group(1)) * scale


def partitions(df) -> int:
    """``df``'s number of partitions: without a job on a classic session; on Connect one
    job whose tasks read no rows, each returning its partition index."""
    if not is_connect(df.sparkSession):
        return df.rdd.getNumPartitions()
    from ..tasks.environment import partition_id
    found = df.select().mapInArrow(partition_id, "partition long").toArrow()
    return max(found.column("partition").to_pylist(), default=0) + 1


@contextlib.contextmanager
def job_description(spark, text: str):
    """Name the jobs started inside the block in Spark's UI (a classic session; Connect's
    client cannot name jobs, so they keep Spark's names)."""
    if is_connect(spark):
        yield
        return
    sc = spark.sparkContext
    sc.setJobDescription(text)
    try:
        yield
    finally:
        sc.setJobDescription(None)
