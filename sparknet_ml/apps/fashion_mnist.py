"""SparkNet on Fashion-MNIST: Caffe's stock LeNet prototxt trained with SparkNetEstimator.

    python -m sparknet_ml.apps.fashion_mnist [--master local[2]] [--workers 2]
        [--sync-interval 50] [--rounds 100] [--batch 64] [--out runs/lenet-fashion-mnist]
        [--overwrite] [--train-rows N] [--test-rows N]

Reads Debian's Fashion-MNIST (idx files) into DataFrames of raw uint8 pixels (binary column),
trains with SparkNet rounds printing per-round progress, prints the test accuracy and saves
the model (Spark ML format, plus deploy.prototxt + weights.caffemodel for plain pycaffe).
"""
from __future__ import annotations

import argparse
import sys

from sparknet_ml import storage
from sparknet_ml.apps import (add_training_arguments, check_out, fit_evaluate, log_rounds,
                              run_main, saving_out, spark_session)


def fashion_mnist_df(spark, split: str, rows: int | None = None):
    """A DataFrame (features: binary of 784 uint8 pixels, label: double) of one split, or of
    its first ``rows`` examples."""
    import pyarrow as pa
    from sparknet_ml.data import fashion_mnist
    images, labels = fashion_mnist.load(split)
    if rows is not None:
        images, labels = images[:rows], labels[:rows]
    pixels = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(28 * 28), len(images), [None, pa.py_buffer(images.tobytes())])
    table = pa.table({"features": pixels.cast(pa.binary()),
                      "label": pa.array(labels.astype("float64"))})
    return spark.createDataFrame(table)


def main(argv=None) -> int:
    """The app's entry point: errors are one line and exit code 2."""
    return run_main("fashion_mnist", lambda: _main(argv))


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(parser, tau=50, rounds=100, out="runs/lenet-fashion-mnist")
    parser.add_argument("--train-rows", type=int, metavar="N",
                        help="train on the first N training images only (default: all 60,000)")
    parser.add_argument("--test-rows", type=int, metavar="N",
                        help="score the first N test images only (default: all 10,000)")
    args = parser.parse_args(argv)
    for option, value in (("--train-rows", args.train_rows), ("--test-rows", args.test_rows)):
        if value is not None and value < 1:
            parser.error(f"{option} must be at least 1, not {value}")
    check_out(args.out, args.overwrite)
    log_rounds()
    from sparknet_ml import SparkNetEstimator, zoo

    spark = spark_session(args.master, "sparknet_ml fashion-mnist", args.conf, args.remote)
    master = spark.conf.get("spark.master")
    train = fashion_mnist_df(spark, "train", args.train_rows)
    test = fashion_mnist_df(spark, "test", args.test_rows)
    estimator = SparkNetEstimator(
        netPrototxt=zoo.prototxt("lenet_train_test"), solverPrototxt=zoo.prototxt("lenet_solver"),
        inputShape=[1, 28, 28], batchSize=args.batch, syncInterval=args.sync_interval,
        maxIter=args.rounds, numWorkers=args.workers, seed=args.seed)
    model, fit_seconds, accuracy = fit_evaluate(estimator, train, test)
    with saving_out(args.out, args.overwrite) as staged:
        model.write().save(staged)
        model.saveCaffeModel(storage.join(staged, "caffe"))
    samples = int(model.history["samples"].sum())
    print(f"LeNet on Fashion-MNIST with SparkNet ({master}, {args.workers} workers, "
          f"tau={args.sync_interval}, {args.rounds} rounds, batch {args.batch}): "
          f"fit {fit_seconds:.0f} s ({samples / fit_seconds:.0f} samples/s), "
          f"test accuracy {accuracy:.4f}; saved to {args.out}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
