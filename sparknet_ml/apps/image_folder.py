"""SparkNet on any image folder: a cifar10_quick-style net trained on ``ROOT/<class>/<image>``.

    python -m sparknet_ml.apps.image_folder --data ROOT [--master local[2]] [--workers 2]
        [--sync-interval 10] [--rounds 40] [--batch 64] [--test-fraction 0.2]
        [--net PROTOTXT --solver PROTOTXT] [--plot PNG] [--out runs/image-folder]
        [--overwrite]

Reads the images with Spark's image data source (files that are not images are skipped;
images of several sizes are resized to the most common one), labels each by the name of its
sub-folder (classes in sorted order), sets the net's output InnerProduct layer to the number
of classes, trains on a random split, prints the test accuracy and saves the model with
``classes.json`` beside it.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys

import numpy as np

from sparknet_ml import storage
from sparknet_ml.apps import (add_training_arguments, check_out, fit_evaluate, log_rounds,
                              run_main, saving_out, spark_session)
from sparknet_ml.data.images import resize_bilinear

DEFAULT_NET, DEFAULT_SOLVER = "cifar10_quick_train", "cifar10_quick_solver"


def labelled_images(spark, root: str, *columns):
    """Spark's image rows under ``root/<class>/`` (files that are not images skipped) with
    ``label`` (double) by the sorted, URI-decoded class names, the class names, and the
    distinct values of ``columns`` (image fields such as ``image.height``) per class folder.

    Raises
    ------
    ValueError
        When ``root`` holds fewer than two class folders with images.
    """
    from urllib.parse import unquote
    from pyspark.sql import functions as F
    images = (spark.read.format("image").option("dropInvalid", True)
              .load(storage.join(root, "*"))
              .withColumn("folder", F.element_at(F.split("image.origin", "/"), -2)))
    found = images.groupBy("folder", *columns).count().collect()
    names = {row["folder"]: unquote(row["folder"]) for row in found}  # Spark's paths are URIs
    classes = sorted(set(names.values()))
    if len(classes) < 2:
        raise ValueError(f"{root}: an image folder needs at least two sub-folders of images "
                         f"(one per class), found {classes or 'none'}")
    index = F.create_map(*[value for folder, name in names.items()
                           for value in (F.lit(folder), F.lit(float(classes.index(name))))])
    return images.select("image", index[F.col("folder")].alias("label")), classes, found


def to_examples(batches, shape, name: str = "features"):
    """mapInArrow function: Spark image structs (BGR HWC, any size, 1/3/4 channels) to
    ``name`` (``shape`` = C x H x W uint8, CHW, BGR as Caffe reads images; resized like
    Caffe's ImageData, gray repeated to 3 channels, alpha dropped) and ``label``."""
    import pyarrow as pa
    channels, height, width = shape
    for batch in batches:
        images = batch.column("image")
        features = []
        for i in range(len(batch)):
            h, w, c = (images.field(f)[i].as_py() for f in ("height", "width", "nChannels"))
            hwc = np.frombuffer(images.field("data")[i].as_py(), np.uint8).reshape(h, w, c)
            if channels == 3:
                hwc = np.repeat(hwc, 3, axis=2) if c == 1 else hwc[:, :, :3]
            if (h, w) != (height, width):
                hwc = resize_bilinear(hwc, height, width)
            features.append(hwc.transpose(2, 0, 1).tobytes())
        yield pa.RecordBatch.from_arrays([pa.array(features, pa.binary()), batch.column("label")],
                                         names=[name, "label"])


def read_image_folder(spark, root: str):
    """Images under ``root/<class>/`` as a DataFrame (``image``, ``label`` double), the sorted
    class names (label ``i`` is ``classes[i]``) and the examples' shape [C, H, W].

    Images all of one size and channel count keep Spark's image struct. Otherwise every image
    becomes C x H x W uint8 bytes resized (bilinear, as Caffe's ImageData) to the most common
    height x width, with 3 channels when any image has colour (logged).

    Raises
    ------
    ValueError
        When ``root`` holds fewer than two class folders with images.
    """
    images, classes, found = labelled_images(spark, root, "image.nChannels", "image.height",
                                             "image.width")
    sizes = {}
    for row in found:
        sizes[(row.height, row.width)] = sizes.get((row.height, row.width), 0) + row["count"]
    channels = {row.nChannels for row in found}
    if len(sizes) == 1 and len(channels) == 1:
        return images, classes, [channels.pop(), *next(iter(sizes))]
    height, width = max(sizes, key=lambda size: (sizes[size], size))
    shape = [3 if max(channels) >= 3 else 1, height, width]
    logging.getLogger(__name__).warning(
        "%s: images of %d sizes and %s channels: every image is resized to %s (the most "
        "common size)", root, len(sizes), "/".join(map(str, sorted(channels))),
        "x".join(map(str, shape)))
    return images.mapInArrow(functools.partial(to_examples, shape=shape, name="image"),
                             "image binary, label double"), classes, shape


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
    """The app's entry point: errors are one line and exit code 2."""
    return run_main("image_folder", lambda: _main(argv))


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of one sub-folder per class")
    add_training_arguments(parser, tau=10, rounds=40, out="runs/image-folder")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--net", help=f"net prototxt (default: the zoo's {DEFAULT_NET})")
    parser.add_argument("--solver", help=f"solver prototxt (default: {DEFAULT_SOLVER})")
    parser.add_argument("--plot", help="write a PNG of the training history here")
    args = parser.parse_args(argv)
    check_out(args.out, args.overwrite)
    log_rounds()
    from sparknet_ml import SparkNetEstimator, zoo
    from sparknet_ml import net as netlib
    from sparknet_ml.net.prototxt import read_prototxt_file

    spark = spark_session(args.master, "sparknet_ml image folder", args.conf, args.remote)
    try:
        if not storage.is_dir(args.data):
            raise FileNotFoundError(f"--data {args.data}: no such folder")
        data, classes, shape = read_image_folder(spark, args.data)
        train, test = data.randomSplit([1 - args.test_fraction, args.test_fraction],
                                       seed=args.seed)
        net = read_prototxt_file(args.net) if args.net else zoo.prototxt(DEFAULT_NET)
        estimator = SparkNetEstimator(
            netPrototxt=net_for_classes(net, shape, len(classes)),
            solverPrototxt=args.solver or zoo.prototxt(DEFAULT_SOLVER), inputShape=shape,
            featuresCol="image", batchSize=args.batch, syncInterval=args.sync_interval,
            maxIter=args.rounds, numWorkers=args.workers, seed=args.seed)
        model, fit_seconds, accuracy = fit_evaluate(estimator, train, test)
        with saving_out(args.out, args.overwrite) as staged:
            model.write().save(staged)
            storage.write_bytes(storage.join(staged, "classes.json"),
                                json.dumps(classes).encode())
        master = spark.conf.get("spark.master")
    finally:
        spark.stop()
    if args.plot:
        model.plotHistory(args.plot)
    print(f"{netlib.parse_net(estimator.getNetPrototxt()).name} on {args.data} "
          f"({len(classes)} classes, {'x'.join(map(str, shape))} images, {master}, "
          f"{args.workers} workers, tau={args.sync_interval}, {args.rounds} rounds): fit "
          f"{fit_seconds:.0f} s, test accuracy {accuracy:.4f}; saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
