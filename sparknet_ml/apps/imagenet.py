"""SparkNet's ImageNetApp: CaffeNet or GoogLeNet (Caffe's stock files) on an image folder.

    python -m sparknet_ml.apps.imagenet --data ROOT [--net caffenet|googlenet|PROTOTXT]
        [--solver PROTOTXT] [--mean-file BINARYPROTO] [--master local[2]] [--workers 2]
        [--sync-interval 10] [--rounds 20] [--batch 32] [--base-lr 0.01]
        [--test-fraction 0.2] [--out runs/imagenet]

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
from sparknet_ml.apps import add_training_arguments, log_rounds, rounds_per_job, spark_session
from sparknet_ml.data.images import resize_bilinear

NETS = {"caffenet": "bvlc_reference_caffenet", "googlenet": "bvlc_googlenet"}
SIZE = 256


def to_examples(batches, size: int):
    """mapInArrow function: Spark image structs (BGR HWC, any size, 1/3/4 channels) to
    ``features`` (3 x size x size uint8, CHW, BGR as Caffe reads images) and ``label``."""
    import pyarrow as pa
    for batch in batches:
        images = batch.column("image")
        features = []
        for i in range(len(batch)):
            h, w, c = (images.field(f)[i].as_py() for f in ("height", "width", "nChannels"))
            hwc = np.frombuffer(images.field("data")[i].as_py(), np.uint8).reshape(h, w, c)
            hwc = np.repeat(hwc, 3, axis=2) if c == 1 else hwc[:, :, :3]
            features.append(resize_bilinear(hwc, size, size).transpose(2, 0, 1).tobytes())
        yield pa.RecordBatch.from_arrays([pa.array(features, pa.binary()), batch.column("label")],
                                         names=["features", "label"])


def read_images(spark, root: str, size: int = SIZE):
    """``root/<class>/<image>`` as a DataFrame (features binary 3 x size x size uint8, label
    double) and the sorted class names.

    Raises
    ------
    ValueError
        When ``root`` holds fewer than two class folders with images.
    """
    from pyspark.sql import functions as F
    images = (spark.read.format("image").option("dropInvalid", True)
              .load(storage.join(root, "*"))
              .withColumn("class", F.element_at(F.split("image.origin", "/"), -2)))
    classes = sorted(row["class"] for row in images.select("class").distinct().collect())
    if len(classes) < 2:
        raise ValueError(f"{root}: an image folder needs at least two sub-folders of images "
                         f"(one per class), found {classes or 'none'}")
    index = F.array_position(F.array(*[F.lit(c) for c in classes]), F.col("class")) - 1
    labelled = images.select("image", index.cast("double").alias("label"))
    return labelled.mapInArrow(functools.partial(to_examples, size=size),
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
    """Train, evaluate and save as the module docstring says; returns the report."""
    import time
    from sparknet_ml.persistence.caffemodel import mean_blob_bytes
    spark = spark_session(args.master, "sparknet_ml ImageNet", args.conf, args.remote)
    try:
        if not storage.is_dir(args.data):
            raise FileNotFoundError(f"--data {args.data}: --net {args.net} trains on an image "
                                    "folder (one sub-folder of images per class)")
        storage.check_writable(args.out)
        data, classes = read_images(spark, args.data)
        train, test = data.randomSplit([1 - args.test_fraction, args.test_fraction],
                                       seed=args.seed)
        train = train.cache()
        estimator = build_estimator(args.net, args.solver, args.mean_file, args)
        estimator.setNetPrototxt(set_classes(estimator.getNetPrototxt(), len(classes)))
        if args.mean_file is None and needs_mean_file(estimator.getNetPrototxt()):
            mean_path = storage.join(args.out, "mean.binaryproto")
            storage.write_bytes(mean_path, mean_blob_bytes(mean_image(train, (3, SIZE, SIZE))))
            estimator.setMeanFile(mean_path)
        started = time.perf_counter()
        model = estimator.fit(train)
        fit_seconds = time.perf_counter() - started
        report = {"net": args.net, "classes": classes, "fit_seconds": fit_seconds,
                  "top1": top_k_accuracy(model, test, 1),
                  "top5": top_k_accuracy(model, test, min(5, len(classes)))}
        model.write().overwrite().save(storage.join(args.out, "model"))
        storage.write_bytes(storage.join(args.out, "classes.json"), json.dumps(classes).encode())
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of one sub-folder per class")
    add_training_arguments(parser, tau=10, rounds=20, out="runs/imagenet")
    parser.set_defaults(batch=32)
    parser.add_argument("--rounds-per-job", type=rounds_per_job, default="auto")
    add_arguments(parser)
    args = parser.parse_args(argv)
    log_rounds()
    try:
        report = run(args)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(f"{args.net} on {args.data} ({len(report['classes'])} classes, {args.workers} "
          f"workers, tau={args.sync_interval}, {args.rounds} rounds): fit "
          f"{report['fit_seconds']:.0f} s, top-1 {report['top1']:.4f}, top-5 "
          f"{report['top5']:.4f}; saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
