"""SparkNet's ImageNetApp: CaffeNet or GoogLeNet (Caffe's stock files) on an image folder.

    python -m sparknet_ml.apps.imagenet --data ROOT [--net caffenet|googlenet|PROTOTXT]
        [--solver PROTOTXT] [--mean-file BINARYPROTO] [--master local[2]] [--workers 2]
        [--sync-interval 10] [--rounds 20] [--batch 32] [--base-lr 0.01]
        [--test-fraction 0.2] [--out runs/imagenet] [--overwrite]

``ROOT/<class>/<image>``: JPEG or PNG files of any size (read with Spark's image source),
resized to 256x256 (bilinear, as Caffe's ``ImageData`` ``new_height``/``new_width`` does with
OpenCV) and stored as 3x256x256 uint8 (gray images as three equal channels). The net is trained
unchanged but for the number of classes of its classifiers, with its own transforms: random
227x227 (GoogLeNet 224x224) crops and mirrors in training, center crops in testing. Without
``--mean-file``, a net that subtracts a mean file gets the training split's mean image,
written as ``mean.binaryproto`` beside the model (what Caffe's ``compute_image_mean`` does).
Prints top-1 and top-5 accuracy on the held-out split and saves the model to ``--out``.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys

import numpy as np

from sparknet_ml import storage
from sparknet_ml.apps import (add_training_arguments, check_out, log_rounds, rounds_per_job,
                              run_main, saving_out, spark_session)
from sparknet_ml.apps.image_folder import labelled_images, to_examples

NETS = {"caffenet": "bvlc_reference_caffenet", "googlenet": "bvlc_googlenet"}
SIZE = 256


def read_images(spark, root: str, size: int = SIZE):
    """``root/<class>/<image>`` as a DataFrame (features binary 3 x size x size uint8, label
    double) and the sorted class names.

    Raises
    ------
    ValueError
        When ``root`` holds fewer than two class folders with images.
    """
    images, classes, _ = labelled_images(spark, root)
    return images.mapInArrow(functools.partial(to_examples, shape=(3, size, size)),
                             "features binary, label double"), classes


def partial_sums(batches, pixels: int):
    """mapInArrow function: one row per partition, the float64 sum of its examples and their
    count."""
    import pyarrow as pa
    total, count = np.zeros(pixels), 0
    for batch in batches:
        for value in batch.column("features").to_pylist():
            total += np.frombuffer(value, np.uint8)
            count += 1
    yield pa.RecordBatch.from_pydict({"sum": [total.tobytes()], "count": [count]})


def mean_image(df, shape) -> np.ndarray:
    """The mean example (C, H, W) of ``df``'s uint8 ``features``, as float32 (one Spark job;
    Caffe's ``compute_image_mean``)."""
    pixels = int(np.prod(shape))
    rows = df.select("features").mapInArrow(functools.partial(partial_sums, pixels=pixels),
                                            "sum binary, count long").collect()
    total = sum(np.frombuffer(r["sum"], np.float64) for r in rows)
    return (total / sum(r["count"] for r in rows)).astype(np.float32).reshape(shape)


def set_classes(net_text: str, classes: int) -> str:
    """``net_text`` with every InnerProduct classifier that feeds a SoftmaxWithLoss or an
    Accuracy layer set to ``classes`` outputs (GoogLeNet has three)."""
    from sparknet_ml import net as netlib
    net = netlib.parse_net(net_text)
    heads = {layer.bottom[0] for layer in net.layer
             if layer.type in ("SoftmaxWithLoss", "Accuracy") and layer.bottom}
    found = [layer for layer in net.layer if layer.type == "InnerProduct"
             and set(layer.top) & heads]
    if not found:
        raise ValueError("the net has no InnerProduct layer feeding a SoftmaxWithLoss: set "
                         "its number of classes yourself")
    for layer in found:
        layer.inner_product_param.num_output = classes
    return netlib.net_to_text(net)


def top_k_accuracy(model, df, k: int) -> float:
    """Share of ``df``'s rows whose label is among the model's ``k`` most probable classes."""
    rows = model.transform(df).select("label", "probability").collect()
    if not rows:
        return float("nan")
    probabilities = np.array([r.probability.toArray() for r in rows])
    labels = np.array([r.label for r in rows], int)
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float((best == labels[:, None]).any(axis=1).mean())


def build_estimator(net: str, solver: str | None, mean_file: str | None, args):
    """The SparkNetEstimator for ``--net`` (a zoo name or a prototxt file)."""
    from sparknet_ml import SparkNetEstimator, zoo
    from sparknet_ml.net.prototxt import read_prototxt_file
    if net in NETS:
        net_text = zoo.prototxt(f"{NETS[net]}_train_val")
        solver = solver or zoo.prototxt(f"{NETS[net]}_solver")
    else:
        net_text = read_prototxt_file(net)
        if solver is None:
            raise ValueError(f"--net {net}: a net file needs --solver")
    return SparkNetEstimator(
        netPrototxt=net_text, solverPrototxt=solver, inputShape=[3, SIZE, SIZE],
        meanFile=mean_file, batchSize=args.batch, syncInterval=args.sync_interval,
        maxIter=args.rounds, numWorkers=args.workers, seed=args.seed, baseLr=args.base_lr,
        roundsPerJob=args.rounds_per_job)


def needs_mean_file(net_text: str) -> bool:
    """Whether a phase of the net subtracts a mean file."""
    from caffe.proto import caffe_pb2
    from sparknet_ml import net as netlib
    return any(netlib.data_transform(net_text, phase)[1].mean_file
               for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST))


def run(args) -> dict:
    """Train, evaluate and save as the module docstring says; returns the report.

    Raises
    ------
    ValueError
        When ``--data`` is no image folder of two classes or more, or ``--out`` may not be
        written (see :func:`sparknet_ml.apps.check_out`).
    """
    import tempfile
    import time
    from sparknet_ml.persistence.caffemodel import mean_blob_bytes
    check_out(args.out, args.overwrite)
    spark = spark_session(args.master, "sparknet_ml ImageNet", args.conf, args.remote)
    try:
        if not storage.is_dir(args.data):
            raise FileNotFoundError(f"--data {args.data}: --net {args.net} trains on an image "
                                    "folder (one sub-folder of images per class)")
        data, classes = read_images(spark, args.data)
        train, test = data.randomSplit([1 - args.test_fraction, args.test_fraction],
                                       seed=args.seed)
        train = train.cache()
        estimator = build_estimator(args.net, args.solver, args.mean_file, args)
        estimator.setNetPrototxt(set_classes(estimator.getNetPrototxt(), len(classes)))
        mean = None
        with tempfile.TemporaryDirectory(prefix="sparknet-mean-") as scratch:
            if args.mean_file is None and needs_mean_file(estimator.getNetPrototxt()):
                mean = mean_blob_bytes(mean_image(train, (3, SIZE, SIZE)))
                storage.write_bytes(storage.join(scratch, "mean.binaryproto"), mean)
                estimator.setMeanFile(storage.join(scratch, "mean.binaryproto"))
            started = time.perf_counter()
            model = estimator.fit(train)
            fit_seconds = time.perf_counter() - started
        report = {"net": args.net, "classes": classes, "fit_seconds": fit_seconds,
                  "top1": top_k_accuracy(model, test, 1),
                  "top5": top_k_accuracy(model, test, min(5, len(classes)))}
        with saving_out(args.out, args.overwrite) as staged:
            if mean is not None:  # the model's meanFile names where it is kept
                model.set(model.meanFile, storage.join(args.out, "mean.binaryproto"))
                storage.write_bytes(storage.join(staged, "mean.binaryproto"), mean)
            model.write().save(storage.join(staged, "model"))
            storage.write_bytes(storage.join(staged, "classes.json"),
                                json.dumps(classes).encode())
    finally:
        spark.stop()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's own options (the shared training ones come from add_training_arguments)."""
    parser.add_argument("--net", default="caffenet",
                        help="caffenet, googlenet (Caffe's stock files) or a train_val prototxt")
    parser.add_argument("--solver", help="solver prototxt (default: the stock net's own)")
    parser.add_argument("--mean-file", help="mean image .binaryproto (default: computed from "
                                            "the training split when the net uses a mean file)")
    parser.add_argument("--base-lr", type=float, help="overrides the solver's base_lr")
    parser.add_argument("--test-fraction", type=float, default=0.2)


def main(argv=None) -> int:
    """The app's entry point: errors are one line and exit code 2."""
    return run_main("imagenet", lambda: _main(argv))


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of one sub-folder per class")
    add_training_arguments(parser, tau=10, rounds=20, out="runs/imagenet")
    parser.set_defaults(batch=32)
    parser.add_argument("--rounds-per-job", type=rounds_per_job, default="auto")
    add_arguments(parser)
    args = parser.parse_args(argv)
    log_rounds()
    report = run(args)
    print(f"{args.net} on {args.data} ({len(report['classes'])} classes, {args.workers} "
          f"workers, tau={args.sync_interval}, {args.rounds} rounds): fit "
          f"{report['fit_seconds']:.0f} s, top-1 {report['top1']:.4f}, top-5 "
          f"{report['top5']:.4f}; saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
