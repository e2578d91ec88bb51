"""Runnable SparkNet apps (``python -m`` or ``spark-submit`` a file) and what they share."""
from __future__ import annotations

import argparse
import os
import socket
import sys


def spark_session(master: str | None, name: str, conf=(), remote: str | None = None):
    """The SparkSession of an app or CLI command: a Spark Connect client of ``remote``
    (``sc://host:15002``) when given; else spark-submit's when run under it, else one on
    ``master`` (default ``local[2]``) on loopback, with this interpreter for Python workers and
    one BLAS thread per worker. ``conf`` holds ``KEY=VALUE`` settings (``--conf``), for
    example ``spark.hadoop.fs.s3a.endpoint=...`` to reach a file system (on Connect, the
    settings a session may change).

    Raises
    ------
    ValueError
        When ``master`` is a ``spark://`` URL none of whose masters accepts a connection
        (Spark itself retries for over a minute, then reports a stopped SparkContext).
    """
    from pyspark.sql import SparkSession
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if master and master.startswith("spark://"):
        check_standalone_master(master)
    builder = SparkSession.builder
    if remote:
        builder = builder.remote(remote)
    else:
        builder = builder.appName(name).config("spark.ui.showConsoleProgress", "false")
        if master or "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
            builder = builder.master(master or "local[2]")
    for item in conf:
        key, _, value = item.partition("=")
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not remote:
        spark.sparkContext.setLogLevel("ERROR")
    return spark


MASTER_TIMEOUT = 5.0
"""Seconds a standalone master has to accept a TCP connection before a session starts."""


def check_standalone_master(master: str) -> None:
    """Refuse ``spark://HOST:PORT[,HOST:PORT...]`` when no master there accepts a connection.

    Raises
    ------
    ValueError
        Naming the URL and each address's error.
    """
    failures = []
    for address in master[len("spark://"):].split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), MASTER_TIMEOUT):
                return
        except (OSError, ValueError) as err:
            failures.append(f"{address}: {getattr(err, 'strerror', None) or err}")
    raise ValueError(f"--master {master}: no Spark master answered ({'; '.join(failures)}); "
                     "is the master running, and is that its host and port (the master's "
                     "log and web UI show its spark:// URL)?")


def add_session_arguments(parser) -> None:
    """``--master`` or ``--remote``, and ``--conf``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--master", help="Spark master (default: spark-submit's, else local[2])")
    where.add_argument("--remote", metavar="sc://HOST:PORT",
                       help="a Spark Connect server to run on instead")
    add_conf_argument(parser)


def _conf_item(item: str) -> str:
    """An argparse type: ``KEY=VALUE`` with a non-empty key."""
    if not item.partition("=")[0] or "=" not in item:
        raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
    return item


def add_conf_argument(parser) -> None:
    """``--conf KEY=VALUE``, repeatable, as spark-submit takes it."""
    parser.add_argument("--conf", action="append", default=[], type=_conf_item,
                        metavar="KEY=VALUE",
                        help="a Spark setting, repeatable (e.g. spark.hadoop.fs.s3a.endpoint=URL "
                             "to reach a file system)")


def rounds_per_job(text: str):
    """``--rounds-per-job``'s value: ``auto`` or a positive integer (roundsPerJob)."""
    if text.strip().lower() == "auto":
        return "auto"
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def add_training_arguments(parser, *, tau: int, rounds: int, out: str) -> None:
    """The options every app takes: master or remote, conf, workers, tau, rounds, batch, seed,
    out, overwrite."""
    add_session_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="numWorkers (default 2)")
    parser.add_argument("--sync-interval", type=int, default=tau, help=f"tau (default {tau})")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"maxIter (default {rounds})")
    parser.add_argument("--batch", type=int, default=64, help="batchSize (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    add_out_arguments(parser, out, "folder for the saved model")


def add_out_arguments(parser, default: str | None, what: str) -> None:
    """``--out`` (required when ``default`` is None) and ``--overwrite``."""
    parser.add_argument("--out", default=default, required=default is None,
                        help=what + (f" (default {default})" if default else ""))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out when it holds an earlier output of ours (a folder "
                             "of anything else is never replaced)")


def is_output(uri: str) -> bool:
    """Whether ``uri`` holds what an app or ``train`` writes: a saved model there or in its
    ``model`` folder."""
    from .. import storage
    from ..persistence import is_saved_stage
    return is_saved_stage(uri) or is_saved_stage(storage.join(uri, "model"))


OUTPUT = "a saved sparknet_ml model (no metadata folder there or in model/)"


def check_out(out: str, overwrite: bool, ours=is_output, what: str = OUTPUT) -> None:
    """Before any work: ``--out`` may be written (new, an empty folder, or with
    ``--overwrite`` an earlier output of ours) and can be.

    Raises
    ------
    ValueError
        Naming ``--out`` and why not.
    """
    from .. import storage
    try:
        storage.check_replaceable(out, overwrite, "--overwrite", ours, what)
    except storage.StorageError as err:
        raise ValueError(f"--out {err}") from None
    try:
        storage.check_writable(out)
    except storage.StorageError as err:
        raise ValueError(f"--out {out}: cannot write there ({err})") from None


def saving_out(out: str, overwrite: bool, ours=is_output, what: str = OUTPUT):
    """:func:`sparknet_ml.storage.replacing` for ``--out``: yields the staged folder to write
    everything into; it replaces ``out`` once complete."""
    from .. import storage
    return storage.replacing(out, overwrite, "--overwrite", ours, what)


def log_rounds() -> None:
    """Print each round's line (loss, samples/s, time) with a timestamp."""
    import logging
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sparknet_ml").setLevel(logging.INFO)


def fit_evaluate(estimator, train, test):
    """Fit ``estimator`` on ``train`` and measure top-1 accuracy on ``test``; returns the
    model, the fit's seconds and the accuracy."""
    import time
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    started = time.perf_counter()
    model = estimator.fit(train)
    fit_seconds = time.perf_counter() - started
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        model.transform(test))
    return model, fit_seconds, accuracy


def one_line(err: BaseException) -> str:
    """The first line of an error, for Spark's JVM errors their Java message."""
    text = str(err).strip()
    java = getattr(err, "java_exception", None)
    if java is not None:
        try:
            text = java.toString()
        except Exception:  # noqa: BLE001 - the gateway may be gone already
            text = type(err).__name__
    return (text.splitlines() or [type(err).__name__])[0]


def run_main(prog: str, run) -> int:
    """``run()``'s exit code; bad input and Spark's own errors become one
    ``PROG: error: ...`` line on stderr and exit code 2 (other errors propagate)."""
    try:
        return run()
    except Exception as err:  # noqa: BLE001 - bad input and Spark's own errors become one line
        ours = isinstance(err, (ValueError, TypeError, OSError))
        if not ours and type(err).__module__.split(".")[0] not in ("pyspark", "py4j"):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
