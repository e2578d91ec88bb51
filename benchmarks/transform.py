"""Transform: rows/s of ``SparkNetModel.transform`` on a cached DataFrame written to Spark's
noop sink vs a raw pycaffe forward loop over in-memory float32 batches of the same size, in
one process with the same cores (local[1] vs one OpenBLAS thread); local[2] reported beside
it. Medians of 5 interleaved passes of each, with a third: an identity ``mapInArrow`` over the
same DataFrame, Spark's own share of a pass (JVM reading, Arrow to and from the Python worker).
Also the Arrow → tensor conversion cost per row, timed alone. local[2] runs again through a
Spark Connect server on local[2] (``connect_vs_classic``: its transform_vs_raw ÷ the classic
one of the same net and batch; goal ≥ 0.90).

LeNet at batch 64 and 256 on Fashion-MNIST (binary uint8 pixels); cifar10_quick at batch 64 and
256 on the same images padded to 32x32 and repeated over 3 channels.

    python benchmarks/transform.py [--quick] [--out FILE]
"""
import argparse
import functools
import os
import sys
import time

import numpy as np

from _machine import interleaved, write
from _spark import session, table, timed

NETS = {"lenet": ("lenet_train_test", "lenet_solver", (1, 28, 28)),
        "cifar10_quick": ("cifar10_quick_train", "cifar10_quick_solver", (3, 32, 32))}


def pixels(net: str, rows: int):
    """uint8 images shaped for ``net`` and their labels."""
    from sparknet_ml.data import fashion_mnist
    images, labels = fashion_mnist.load("train")
    x = images[:rows, None]
    if net == "cifar10_quick":
        x = np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    return np.ascontiguousarray(x), labels[:rows]


def frame(spark, x, y, partitions: int):
    import pyarrow as pa
    width = int(np.prod(x.shape[1:]))
    features = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(x),
                                                    [None, pa.py_buffer(x.tobytes())])
    table_ = pa.table({"features": features.cast(pa.binary()),
                       "label": pa.array(y.astype(np.float64))})
    df = spark.createDataFrame(table_).repartition(partitions).cache()
    df.count()
    return df


def model_for(spark, net: str, batch: int, x, y):
    """A model with real (1 round) weights; scoring speed does not depend on their values."""
    from sparknet_ml import SparkNetEstimator, zoo
    name, solver, shape = NETS[net]
    est = SparkNetEstimator(netPrototxt=zoo.prototxt(name), solverPrototxt=zoo.prototxt(solver),
                            inputShape=list(shape), batchSize=batch, syncInterval=1,
                            maxIter=1, numWorkers=1, seed=0, showProgress=False)
    return est.fit(frame(spark, x[:batch * 2], y[:batch * 2], 1))


def raw_forward_loop(model, x):
    """A raw pycaffe forward pass over ``x`` as float32 batches already normalized in memory."""
    import tempfile
    import caffe
    from sparknet_ml.engine.scoring import load_weights
    from sparknet_ml.engine.solver import net_with_batch
    from sparknet_ml.net import net_to_text
    batch = model.getBatchSize()
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(net_to_text(net_with_batch(model.deployPrototxt, batch)))
        f.flush()
        net = caffe.Net(f.name, caffe.TEST)
    load_weights(net, model.weights)
    ready = model.inputTransform.apply(x)
    data = net.blobs[model._meta["data_top"]]

    def loop():
        for start in range(0, len(ready), batch):
            chunk = ready[start:start + batch]
            if len(chunk) != data.data.shape[0]:
                data.reshape(len(chunk), *data.data.shape[1:])
            data.data[...] = chunk
            net.forward()
    return loop


def arrow_us_per_row(x, shape) -> float:
    import pyarrow as pa
    from sparknet_ml.data.arrow import features_to_array
    from sparknet_ml.engine.transform import Transform
    width = int(np.prod(shape))
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(x), [None, pa.py_buffer(x.tobytes())]).cast(pa.binary())
    convert = functools.partial(features_to_array, column, shape)
    convert()
    seconds = min(timed(lambda: Transform(1 / 256).apply(convert())) for _ in range(5))
    return seconds / len(x) * 1e6


def noop_pass(df):
    """Write ``df`` to Spark's noop sink: every row computed, nothing stored."""
    return lambda: df.write.format("noop").mode("overwrite").save()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "results", "transform.json"))
    args = parser.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before caffe loads: the raw loop's one thread
    repeat = 2 if args.quick else 5
    rows_by_net = {"lenet": 6000 if args.quick else 20000,
                   "cifar10_quick": 1500 if args.quick else 5000}
    results = []
    for cores, connect in ((1, False), (2, False), (2, True)):
        master = f"local[{cores}]"
        spark = session(master, 1, connect=connect)
        for net, rows in rows_by_net.items():
            x, y = pixels(net, rows)
            df = frame(spark, x, y, cores)
            for batch in (64, 256):
                model = model_for(spark, net, batch, x, y)
                # the first calls start the Python workers and build and cache the nets
                ours, raw, floor = interleaved(
                    [noop_pass(model.transform(df)), raw_forward_loop(model, x),
                     noop_pass(df.mapInArrow(lambda batches: batches, df.schema))], repeat)
                row = {"master": master, "session": "connect" if connect else "classic",
                       "net": net, "batch": batch, "rows": rows,
                       "transform_rows_s": round(rows / ours, 1),
                       "raw_rows_s": round(rows / raw, 1),
                       "transform_vs_raw": round(raw / (cores * ours), 3),
                       "spark_floor_share": round(floor / ours, 3),
                       "arrow_us_per_row": round(arrow_us_per_row(x, NETS[net][2]), 2)}
                if connect:
                    classic = next(r for r in results if r["session"] == "classic"
                                   and r["master"] == master and r["net"] == net
                                   and r["batch"] == batch)
                    row["connect_vs_classic"] = round(row["transform_vs_raw"]
                                                      / classic["transform_vs_raw"], 3)
                print(row, flush=True)
                results.append(row)
            df.unpersist()
        spark.stop()
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)  # pyspark's mark of a Connect client
        time.sleep(1)
    print(table(results, ["master", "session", "net", "batch", "transform_rows_s",
                          "raw_rows_s", "transform_vs_raw", "connect_vs_classic",
                          "spark_floor_share", "arrow_us_per_row"]))
    write({"benchmark": "transform",
           "goal": "transform_vs_raw >= 0.70 for LeNet at batch 256, >= 0.90 for cifar10_quick "
                   "(local[1] vs one raw thread); connect_vs_classic >= 0.90",
           "parameters": {"repeats": repeat, "timing": "medians of interleaved passes",
                          "rows": rows_by_net, "sink": "noop",
                          "features": "binary uint8 pixels", "blas_threads": 1,
                          "transform_vs_raw": "transform rows/s / (cores x raw rows/s)",
                          "spark_floor_share": "an identity mapInArrow pass over the same "
                                               "DataFrame / the transform pass"},
           "rows": results}, args.out)


if __name__ == "__main__":
    sys.exit(main())
