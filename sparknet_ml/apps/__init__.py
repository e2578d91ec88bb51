"""Runnable SparkNet apps (``python -m`` or ``spark-submit`` a file) and what they share."""
from __future__ import annotations

import argparse
import os
import sys


def spark_session(master: str | None, name: str, conf=(), remote: str | None = None):
    """The SparkSession of an app or CLI command: a Spark Connect client of ``remote``
    (``sc://host:15002``) when given; else spark-submit's when run under it, else one on
    ``master`` (default ``local[2]``) on loopback, with this interpreter for Python workers and
    one BLAS thread per worker. ``conf`` holds ``KEY=VALUE`` settings (``--conf``), for
    example ``spark.hadoop.fs.s3a.endpoint=...`` to reach a file system (on Connect, the
    settings a session may change)."""
    from pyspark.sql import SparkSession
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
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
    out."""
    add_session_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="numWorkers (default 2)")
    parser.add_argument("--sync-interval", type=int, default=tau, help=f"tau (default {tau})")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"maxIter (default {rounds})")
    parser.add_argument("--batch", type=int, default=64, help="batchSize (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=out)


def log_rounds() -> None:
    """Print each round's line (loss, samples/s, time) with a timestamp."""
    import logging
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sparknet_ml").setLevel(logging.INFO)


def fit_evaluate_save(estimator, train, test, out: str):
    """Fit ``estimator`` on ``train``, measure top-1 accuracy on ``test`` and save the model
    to ``out``; returns the model, the fit's seconds and the accuracy."""
    import time
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    started = time.perf_counter()
    model = estimator.fit(train)
    fit_seconds = time.perf_counter() - started
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        model.transform(test))
    model.write().overwrite().save(out)
    return model, fit_seconds, accuracy
