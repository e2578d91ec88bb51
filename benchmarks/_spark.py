"""What the Spark benchmarks share: runs in child processes, sessions, data, rates."""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def child(script: str, *args: str, env: dict | None = None) -> dict:
    """Run ``script`` (a benchmark in child mode) in its own process; return the JSON of its
    last stdout line. Spark masters and OpenBLAS thread counts are fixed per process."""
    done = subprocess.run([sys.executable, os.path.join(HERE, script), *args],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def session(master: str, blas_threads: int = 1, conf: dict | None = None,
            connect: bool = False):
    """A SparkSession on loopback whose Python workers use ``blas_threads`` OpenBLAS threads;
    with ``connect``, a Spark Connect client of a server on ``master`` that this process starts
    (tests/connect_server.py) and stops when it exits."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["OPENBLAS_NUM_THREADS"] = str(blas_threads)  # local mode: inherited
    os.environ.setdefault("GLOG_minloglevel", "2")
    from pyspark.sql import SparkSession
    settings = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                "spark.executorEnv.OPENBLAS_NUM_THREADS": str(blas_threads),
                "spark.executorEnv.GLOG_minloglevel": "2", "spark.executor.memory": "1g",
                **(conf or {})}
    if connect:
        import atexit
        import tempfile
        from tests.connect_server import ConnectServer
        server = ConnectServer(tempfile.mkdtemp(prefix="sparknet-bench-"), master, settings)
        atexit.register(server.stop)
        return SparkSession.builder.remote(server.url()).create()
    builder = SparkSession.builder.master(master).appName("sparknet_ml benchmark")
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def fashion(spark, split: str, rows: int | None = None, partitions: int = 2):
    """Fashion-MNIST as (features: binary uint8 pixels, label: double), cached."""
    from sparknet_ml.apps.fashion_mnist import fashion_mnist_df
    df = fashion_mnist_df(spark, split, rows).repartition(partitions).cache()
    df.count()
    return df


def steady_rate(history) -> float:
    """Samples/s over all rounds but the first (JIT, first allocations, block loading)."""
    later = history.iloc[1:]
    return float(later["samples"].sum() / later["seconds"].sum())


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def raw_train_rate(net: str, batch: int, seconds: float) -> float:
    """Raw pycaffe ``solver.step`` img/s in this process (the batch already in the blobs),
    with the OpenBLAS threads this process started with."""
    from caffe_speed import batch_of, images_per_second
    from sparknet_ml.data import fashion_mnist
    images, labels = fashion_mnist.load("train")
    return images_per_second(net, batch, None, batch_of(net, images, labels, batch), seconds)


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def with_test_rows(spark, train_rows: int | None, partitions: int = 2):
    """Fashion-MNIST train rows (held_out false) and the 10,000 test rows (held_out true) in
    one cached DataFrame: a fit with ``validationCol="held_out"`` scores the test set."""
    from pyspark.sql import functions as F
    from sparknet_ml.apps.fashion_mnist import fashion_mnist_df
    df = (fashion_mnist_df(spark, "train", train_rows).withColumn("held_out", F.lit(False))
          .unionByName(fashion_mnist_df(spark, "test").withColumn("held_out", F.lit(True)))
          .repartition(partitions).cache())
    df.count()
    return df


def accuracy_timeline(history, fit_seconds: float | None = None) -> list[dict]:
    """Test accuracy against training time: the rounds' own time, plus the time before round
    1 (block caching, initial weights) when ``fit_seconds`` is given; the validation passes
    themselves are left out."""
    setup = 0.0 if fit_seconds is None else fit_seconds - float(history["wall_seconds"].iloc[-1])
    elapsed = setup + history["seconds"].cumsum()
    scored = history["validation_accuracy"].notna()
    return [{"round": int(r), "seconds": round(float(t), 2), "accuracy": round(float(a), 4)}
            for r, t, a in zip(history["round"][scored], elapsed[scored],
                               history["validation_accuracy"][scored])]


def first_reaching(timeline: list[dict], accuracy: float) -> dict | None:
    """The first point of ``timeline`` at or above ``accuracy``."""
    return next((p for p in timeline if p["accuracy"] >= accuracy), None)
