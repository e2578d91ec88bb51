"""The ``sparknet-ml`` command line: ``build-caffe``, ``info``, ``train``, ``score``.

Errors are one ``sparknet-ml: error: ...`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from importlib import metadata

from .build import command as build_command

FASHION_MNIST = ("fashion-mnist", "fashion-mnist-test")


def info(args) -> int:
    """Print the caffe build, GPU and versions as JSON."""
    import shutil
    import subprocess
    report = {"python": platform.python_version()}
    for package in ("sparknet_ml", "pyspark", "pyarrow", "numpy", "protobuf", "caffe"):
        try:
            report[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            report[package] = None
    build = build_command.installed_build_info()
    report["caffe_build"] = build and {k: build.get(k) for k in
                                       ("cuda", "cuda_arch", "key", "patches", "portable")}
    report["gpus"] = (subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.split("\n")[:-1]
                      if shutil.which("nvidia-smi") else [])
    print(json.dumps(report, indent=2))
    return 0


def _session(master: str | None, name: str):
    from pyspark.sql import SparkSession
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(name)
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master or "local[2]")
    spark = builder.config("spark.ui.showConsoleProgress", "false").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _check_data(data: str) -> None:
    """Before any JVM starts: ``--data`` names a dataset or an existing path."""
    if data not in FASHION_MNIST and not os.path.exists(data):
        raise FileNotFoundError(f"--data {data}: no such file or folder (a parquet path, or "
                                f"{' / '.join(FASHION_MNIST)})")


def _read(spark, data: str):
    if data in FASHION_MNIST:
        from .apps.fashion_mnist import fashion_mnist_df
        return fashion_mnist_df(spark, "train" if data == "fashion-mnist" else "test")
    return spark.read.parquet(data)


def train(args) -> int:
    """Fit a SparkNetEstimator on parquet data or Fashion-MNIST and save the model."""
    import logging
    from . import SparkNetEstimator
    for flag, path in (("--net", args.net), ("--solver", args.solver)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path}: no such file")
    _check_data(args.data)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sparknet_ml").setLevel(logging.INFO)
    shape = [int(d) for d in args.input_shape.split(",")] if args.input_shape else None
    estimator = SparkNetEstimator(netPrototxt=args.net, solverPrototxt=args.solver,
                                  featuresCol=args.features_col, labelCol=args.label_col,
                                  inputShape=shape, batchSize=args.batch,
                                  syncInterval=args.sync_interval, maxIter=args.rounds,
                                  numWorkers=args.workers, seed=args.seed)
    spark = _session(args.master, "sparknet-ml train")
    try:
        model = estimator.fit(_read(spark, args.data))
        model.write().overwrite().save(args.out)
    finally:
        spark.stop()
    last = model.history.iloc[-1]
    print(f"trained {int(last['round'])} rounds, last loss {last['loss']:.4f}; "
          f"saved to {args.out}")
    return 0


def score(args) -> int:
    """Score parquet data or Fashion-MNIST with a saved model into a parquet folder."""
    from . import SparkNetModel
    if not os.path.isdir(os.path.join(args.model, "metadata")):
        raise FileNotFoundError(f"--model {args.model}: not a saved model (no metadata folder)")
    _check_data(args.data)
    spark = _session(args.master, "sparknet-ml score")
    try:
        model = SparkNetModel.load(args.model)
        scored = model.transform(_read(spark, args.data))
        scored.write.mode("overwrite").parquet(args.out)
        rows = spark.read.parquet(args.out).count()
    finally:
        spark.stop()
    print(f"scored {rows} rows into {args.out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparknet-ml",
                                     description="SparkNet-style distributed Caffe on Spark.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-caffe", help="build, cache and install pycaffe",
                                description="Build, cache and install pycaffe.")
    build_command.add_arguments(build)
    build.set_defaults(run=build_command.run)
    commands.add_parser("info", help="caffe build, GPUs and versions",
                        description="Print the caffe build, GPUs and versions as JSON."
                        ).set_defaults(run=info)
    fit = commands.add_parser("train", help="train a net on a DataFrame with SparkNet",
                              description="Train a Caffe net with SparkNet rounds; save the "
                                          "model.")
    fit.add_argument("--net", required=True, help="net prototxt file (stock Caffe files work)")
    fit.add_argument("--solver", required=True, help="solver prototxt file")
    fit.add_argument("--data", required=True,
                     help="parquet path, or fashion-mnist (Debian's dataset-fashion-mnist)")
    fit.add_argument("--out", required=True, help="folder for the saved model")
    fit.add_argument("--features-col", default="features")
    fit.add_argument("--label-col", default="label")
    fit.add_argument("--input-shape", help="C,H,W of one example (default: from the net)")
    fit.add_argument("--master", help="Spark master (default: spark-submit's, else local[2])")
    fit.add_argument("--workers", type=int, help="numWorkers (default: the data's partitions)")
    fit.add_argument("--sync-interval", type=int, default=50, help="tau (default 50)")
    fit.add_argument("--rounds", type=int, default=40, help="maxIter (default 40)")
    fit.add_argument("--batch", type=int, default=64, help="batchSize (default 64)")
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(run=train)
    use = commands.add_parser("score", help="score data with a saved model into parquet",
                              description="Add predictions to data with a saved model.")
    use.add_argument("--model", required=True, help="folder of a saved SparkNetModel")
    use.add_argument("--data", required=True, help="parquet path, or fashion-mnist-test")
    use.add_argument("--out", required=True, help="parquet folder to write")
    use.add_argument("--master", help="Spark master (default: spark-submit's, else local[2])")
    use.set_defaults(run=score)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``sparknet-ml`` console script."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as err:  # noqa: BLE001 - bad input and Spark's own errors become one line
        ours = isinstance(err, (ValueError, TypeError, FileNotFoundError))
        if not ours and type(err).__module__.split(".")[0] != "pyspark":
            raise
        print(f"sparknet-ml: error: {err}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
