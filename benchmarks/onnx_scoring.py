"""ONNX scoring: rows/s of ``SparkNetModel.transform`` with ``scoringBackend='onnxruntime'``
against the default Caffe backend, in one run: the same model, the same cached DataFrame,
passes of each interleaved (medians), written to Spark's noop sink, on local[1] and local[2]
(one OpenBLAS thread / one onnxruntime thread per task). It reports which backend to pick; it
has no goal.

LeNet and cifar10_quick (batch 64 and 256) on Fashion-MNIST pixels (binary uint8; cifar10_quick:
padded to 32x32, 3 channels), CaffeNet (batch 32) on the same pictures upscaled to 256x256 RGB,
center-cropped to 227 with a mean image (the stock TEST transform); the exported model takes the
uint8 pixels (a Cast node inside the graph). ``--engine``: no Spark, the
task functions' engines on in-memory batches (Caffe's forward against onnxruntime's), for
machines without Java such as the GPU machine (``--gpu``: Caffe on GPU 0, onnxruntime with its
CUDA provider when it has one, I/O-bound device buffers and its CUDA graph, else its CPU
provider on every core).

    python benchmarks/onnx_scoring.py [--quick] [--engine [--gpu] [--profile] [--lrn op]]
        [--out FILE]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

import transform as transform_bench  # the transform benchmark: its data and noop passes
from _machine import interleaved, write
from _spark import table

NETS = {"lenet": ("lenet_train_test", "lenet_solver", (1, 28, 28), (64, 256)),
        "cifar10_quick": ("cifar10_quick_train", "cifar10_quick_solver", (3, 32, 32), (64, 256)),
        "caffenet": ("bvlc_reference_caffenet_train_val", "bvlc_reference_caffenet_solver",
                     (3, 256, 256), (32,))}


GPU_BATCHES = {"caffenet": (32, 256)}
"""Batches measured with ``--engine --gpu`` where they differ from ``NETS``'s (issue 29's
goals name CaffeNet at 32 and 256)."""


def pixels(net: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 pictures shaped for ``net`` and their labels (LeNet's and cifar10_quick's as the
    transform benchmark makes them)."""
    if net != "caffenet":
        return transform_bench.pixels(net, rows)
    from sparknet_ml.data import fashion_mnist
    from sparknet_ml.data.images import resize_bilinear
    images, labels = fashion_mnist.load("train")
    x = np.stack([np.repeat(resize_bilinear(i[:, :, None], 256, 256).transpose(2, 0, 1), 3,
                            axis=0) for i in images[:rows]])
    return x, labels[:rows]


def model_for(spark, net: str, batch: int, x, y, folder: str):
    """A model with real (1 round) weights; scoring speed does not depend on their values."""
    from sparknet_ml import SparkNetEstimator, zoo
    from sparknet_ml.persistence.caffemodel import mean_blob_bytes
    name, solver, shape, _ = NETS[net]
    mean = None
    if net == "caffenet":
        mean = os.path.join(folder, "mean.binaryproto")
        with open(mean, "wb") as f:
            f.write(mean_blob_bytes(np.full(shape, 117.0, np.float32)))
    est = SparkNetEstimator(netPrototxt=zoo.prototxt(name), solverPrototxt=zoo.prototxt(solver),
                            inputShape=list(shape), batchSize=batch, syncInterval=1,
                            maxIter=1, numWorkers=1, seed=0, meanFile=mean, showProgress=False)
    return est.fit(transform_bench.frame(spark, x[:batch * 2], y[:batch * 2], 1))


def spark_rows(rows_by_net: dict, repeat: int) -> list[dict]:
    from _spark import session
    results = []
    for cores in (1, 2):
        spark = session(f"local[{cores}]", 1)
        for net, rows in rows_by_net.items():
            x, y = pixels(net, rows)
            df = transform_bench.frame(spark, x, y, cores)
            for batch in NETS[net][3]:
                with tempfile.TemporaryDirectory() as folder:
                    caffe_model = model_for(spark, net, batch, x, y, folder)
                onnx_model = caffe_model.copy().setScoringBackend("onnxruntime")
                caffe_s, onnx_s = interleaved(
                    [transform_bench.noop_pass(model.transform(df))
                     for model in (caffe_model, onnx_model)], repeat)
                row = {"where": f"local[{cores}]", "net": net, "batch": batch, "rows": rows,
                       "caffe_rows_s": round(rows / caffe_s, 1),
                       "onnxruntime_rows_s": round(rows / onnx_s, 1),
                       "onnx_vs_caffe": round(caffe_s / onnx_s, 3)}
                print(row, flush=True)
                results.append(row)
            df.unpersist()
        spark.stop()
    return results


def op_shares(model: bytes, providers: list, x: np.ndarray) -> dict:
    """onnxruntime's own profile of the second of two runs of ``x``: each operator type's
    share of the kernel time, largest first (the top 6)."""
    import json
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=providers)
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)  # warm-up (CUDA: algorithm search)
    session.run(None, feed)
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    start = max(e["ts"] for e in events if e["name"] == "model_run")  # the second run
    kernel = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            kernel[e["args"]["op_name"]] = kernel.get(e["args"]["op_name"], 0) + e["dur"]
    total = sum(kernel.values()) or 1
    return {op: round(us / total, 3) for op, us in
            sorted(kernel.items(), key=lambda item: -item[1])[:6]}


def engine_rows(rows_by_net: dict, repeat: int, gpu: bool, profile: bool,
                lrn: str = "conv") -> list[dict]:
    """Caffe's and onnxruntime's forward passes over in-memory batches, as the tasks run them
    (no Spark: the GPU machine has no Java); ``profile``: with onnxruntime's operator shares
    (:func:`op_shares`); ``lrn``: CaffeNet's LRN as the scoring model has it (``"conv"``,
    the banded 1x1 convolution) or as ONNX's ``LRN`` operator (``"op"``, exported files)."""
    import onnxruntime as ort
    from sparknet_ml import net as netlib
    from sparknet_ml import zoo
    from sparknet_ml.engine import onnx_scoring, scoring
    from sparknet_ml.engine.probe import deploy_blob_shapes, deploy_param_shapes
    from sparknet_ml.engine.transform import Transform
    from sparknet_ml.net.onnx_export import to_onnx
    results = []
    cuda = gpu and onnx_scoring.CUDA in ort.get_available_providers()
    for net, rows in rows_by_net.items():
        name, _, shape, batches = NETS[net]
        batches = GPU_BATCHES.get(net, batches) if gpu else batches
        x, _ = pixels(net, rows)
        transform = (Transform(crop=(227, 227), mean_image=np.full(shape, 117.0, np.float32))
                     if net == "caffenet" else Transform(scale=1 / 256))
        for batch in batches:
            deploy = netlib.deploy_net(zoo.prototxt(name), transform.output_shape(shape), batch)
            text = netlib.net_to_text(deploy.net)
            rng = np.random.default_rng(0)
            weights = {layer: [rng.standard_normal(s).astype(np.float32) * 0.01 for s in shapes]
                       for layer, shapes in deploy_param_shapes(text).items()}
            spec = scoring.ScoreSpec(text, batch, "data", (deploy.output_blob,),
                                     0 if gpu else None, False, transform)
            key = scoring.weights_key(weights)
            caffe_net = scoring.cached_net(spec, key, weights, True)
            model = to_onnx(deploy.net, weights, deploy_blob_shapes(text), [deploy.output_blob],
                            transform, shape, pixels=True,
                            banded_lrn=lrn == "conv").SerializeToString()
            threads = 1 if not gpu else os.cpu_count()
            onnx_spec = onnx_scoring.OnnxSpec(batch, "data", "true" if cuda else "false",
                                              0, threads)
            scorer = onnx_scoring.cached_session(onnx_spec, key, model, gpu_visible=gpu)
            caffe_s, onnx_s = interleaved(
                [lambda: scoring.forward(caffe_net, spec, x),
                 lambda: onnx_scoring.forward(scorer, onnx_spec, x)], repeat)
            ran_on = scorer.session.get_providers()[0]  # onnxruntime falls back to the CPU
            row = {"where": ("GPU: Caffe cuDNN" if gpu else "CPU, 1 thread each")
                   + (f", onnxruntime {ran_on}" + ("" if ran_on == onnx_scoring.CUDA
                                                   else f" {threads} threads") if gpu else "")
                   + (", CUDA graph" if scorer.cuda_graph else ""),
                   "net": net + (", LRN op" if lrn == "op" and net == "caffenet" else ""),
                   "batch": batch, "rows": rows,
                   "caffe_rows_s": round(rows / caffe_s, 1),
                   "onnxruntime_rows_s": round(rows / onnx_s, 1),
                   "onnx_vs_caffe": round(caffe_s / onnx_s, 3)}
            if profile:
                row["onnxruntime_op_shares"] = op_shares(
                    model, onnx_scoring.providers(onnx_spec, ort.get_available_providers(), gpu),
                    x[:batch])
            print(row, flush=True)
            results.append(row)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    parser.add_argument("--engine", action="store_true", help="no Spark: the engines alone")
    parser.add_argument("--gpu", action="store_true", help="with --engine: on GPU 0")
    parser.add_argument("--profile", action="store_true",
                        help="with --engine: onnxruntime's kernel time by operator type")
    parser.add_argument("--lrn", choices=("conv", "op"), default="conv",
                        help="with --engine: CaffeNet's LRN as the scoring model has it (a "
                             "banded 1x1 convolution) or as ONNX's LRN operator")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "results", "onnx-scoring.json"))
    args = parser.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before caffe loads
    os.environ.setdefault("GLOG_minloglevel", "2")
    repeat = 2 if args.quick else 5
    scale = 10 if args.gpu else 1
    rows_by_net = {"lenet": (4000 if args.quick else 20000) * scale,
                   "cifar10_quick": (1000 if args.quick else 5000) * scale,
                   "caffenet": (64 if args.quick else 256) * scale}
    results = (engine_rows(rows_by_net, repeat, args.gpu, args.profile, args.lrn) if args.engine
               else spark_rows(rows_by_net, repeat))
    print(table(results, ["where", "net", "batch", "rows", "caffe_rows_s",
                          "onnxruntime_rows_s", "onnx_vs_caffe"]))
    write({"benchmark": "onnx_scoring", "goal": None,
           "parameters": {"repeats": repeat, "timing": "medians of interleaved passes",
                          "rows": rows_by_net, "mode": "engine" if args.engine else "spark",
                          "sink": None if args.engine else "noop",
                          "features": "binary uint8 pixels",
                          "onnx_vs_caffe": "onnxruntime rows/s / Caffe rows/s"},
           "rows": results}, args.out)


if __name__ == "__main__":
    sys.exit(main())
