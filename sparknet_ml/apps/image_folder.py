"""SparkNet on any image folder: a cifar10_quick-style net trained on ``ROOT/<class>/<image>``.

    python -m sparknet_ml.apps.image_folder --data ROOT [--master local[2]] [--workers 2]
        [--sync-interval 10] [--rounds 40] [--batch 64] [--test-fraction 0.2]
        [--net PROTOTXT --solver PROTOTXT] [--plot PNG] [--out runs/image-folder]

Reads the images with Spark's image data source (all of one size and channel count; files that
are not images are skipped), labels each by the name of its sub-folder (classes in sorted
order), sets the net's output InnerProduct layer to the number of classes, trains on a random
split, prints the test accuracy and saves the model with ``classes.json`` beside it.
"""
from __future__ import annotations

import argparse
import json
import sys

from sparknet_ml import storage
from sparknet_ml.apps import (add_training_arguments, fit_evaluate_save, log_rounds,
                             spark_session)

DEFAULT_NET, DEFAULT_SOLVER = "cifar10_quick_train", "cifar10_quick_solver"


def read_image_folder(spark, root: str):
    """Images under ``root/<class>/`` as a DataFrame (image struct, label double) and the
    sorted class names; label ``i`` is ``classes[i]``.

    Raises
    ------
    ValueError
        When ``root`` holds fewer than two class folders with images, or images of
        different sizes or channel counts.
    """
    from pyspark.sql import functions as F
    images = (spark.read.format("image").option("dropInvalid", True)
              .load(storage.join(root, "*"))
              .withColumn("class", F.element_at(F.split("image.origin", "/"), -2)))
    shapes = images.groupBy("class", "image.nChannels", "image.height", "image.width").count()
    found = shapes.collect()
    classes = sorted({row["class"] for row in found})
    if len(classes) < 2:
        raise ValueError(f"{root}: an image folder needs at least two sub-folders of images "
                         f"(one per class), found {classes or 'none'}")
    sizes = sorted({(r.nChannels, r.height, r.width) for r in found})
    if len(sizes) > 1:
        raise ValueError(f"{root}: images differ in channels x height x width: "
                         f"{', '.join('x'.join(map(str, s)) for s in sizes)}; resize them to one")
    index = F.array_position(F.array(*[F.lit(c) for c in classes]), F.col("class")) - 1
    return images.select("image", index.cast("double").alias("label")), classes, list(sizes[0])


def net_for_classes(net_text: str, input_shape, classes: int) -> str:
    """``net_text`` with the InnerProduct layer that produces its output set to ``classes``
    outputs."""
    from sparknet_ml import net as netlib
    net = netlib.parse_net(net_text)
    output = netlib.deploy_net(net, input_shape, 1).output_blob
    layers = [layer for layer in net.layer
              if output in layer.top and layer.type == "InnerProduct"]
    if not layers:
        raise ValueError(f"the net's output blob {output!r} does not come from an "
                         "InnerProduct layer: set its number of outputs yourself")
    for layer in layers:
        layer.inner_product_param.num_output = classes
    return netlib.net_to_text(net)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of one sub-folder per class")
    add_training_arguments(parser, tau=10, rounds=40, out="runs/image-folder")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--net", help=f"net prototxt (default: the zoo's {DEFAULT_NET})")
    parser.add_argument("--solver", help=f"solver prototxt (default: {DEFAULT_SOLVER})")
    parser.add_argument("--plot", help="write a PNG of the training history here")
    args = parser.parse_args(argv)
    log_rounds()
    from sparknet_ml import SparkNetEstimator, zoo
    from sparknet_ml import net as netlib
    from sparknet_ml.net.prototxt import read_prototxt_file

    spark = spark_session(args.master, "sparknet_ml image folder", args.conf, args.remote)
    if not storage.is_dir(args.data):
        parser.error(f"--data {args.data}: no such folder")
    data, classes, shape = read_image_folder(spark, args.data)
    train, test = data.randomSplit([1 - args.test_fraction, args.test_fraction], seed=args.seed)
    net = read_prototxt_file(args.net) if args.net else zoo.prototxt(DEFAULT_NET)
    estimator = SparkNetEstimator(
        netPrototxt=net_for_classes(net, shape, len(classes)),
        solverPrototxt=args.solver or zoo.prototxt(DEFAULT_SOLVER), inputShape=shape,
        featuresCol="image", batchSize=args.batch, syncInterval=args.sync_interval,
        maxIter=args.rounds, numWorkers=args.workers, seed=args.seed)
    model, fit_seconds, accuracy = fit_evaluate_save(estimator, train, test, args.out)
    storage.write_bytes(storage.join(args.out, "classes.json"), json.dumps(classes).encode())
    if args.plot:
        model.plotHistory(args.plot)
    print(f"{netlib.parse_net(estimator.getNetPrototxt()).name} on {args.data} "
          f"({len(classes)} classes, {'x'.join(map(str, shape))} images, "
          f"{spark.conf.get('spark.master')}, {args.workers} workers, tau={args.sync_interval}, "
          f"{args.rounds} rounds): fit {fit_seconds:.0f} s, test accuracy {accuracy:.4f}; "
          f"saved to {args.out}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
