"""The ``sparknet-ml`` command line: ``build-caffe``, ``info``, ``train``, ``score``, ``export``,
``bench``.

Errors are one ``sparknet-ml: error: ...`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from importlib import metadata

from . import storage
from .apps import (add_conf_argument, add_out_arguments, add_session_arguments, check_out,
                   rounds_per_job, run_main, saving_out, spark_session)
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


def _check_data(data: str) -> None:
    """``--data`` names a dataset or an existing location."""
    if data not in FASHION_MNIST and not storage.exists(data):
        raise FileNotFoundError(f"--data {data}: no such file or folder (a parquet path, an "
                                f"image folder, or {' / '.join(FASHION_MNIST)})")


def _is_parquet(path: str) -> bool:
    return not storage.is_dir(path) or any(
        name.endswith(".parquet") or name == "_SUCCESS" for name in storage.list_names(path))


def _read(spark, data: str):
    """The DataFrame ``--data`` names, its default features column and, for an image folder,
    the images' shape."""
    if data in FASHION_MNIST:
        from .apps.fashion_mnist import fashion_mnist_df
        return fashion_mnist_df(spark, "train" if data == "fashion-mnist" else "test"), \
            "features", None
    if _is_parquet(data):
        return spark.read.parquet(data), "features", None
    from .apps.image_folder import read_image_folder
    images, classes, shape = read_image_folder(spark, data)
    print(f"image folder {data}: classes {', '.join(classes)} are labels "
          f"0-{len(classes) - 1}", file=sys.stderr)
    return images, "image", shape


def train(args) -> int:
    """Fit a SparkNetEstimator on parquet data, Fashion-MNIST or an image folder and save the
    model; ``--net caffenet|googlenet`` runs the ImageNet app on an image folder."""
    import logging
    from . import SparkNetEstimator
    from .apps import imagenet
    if args.net in imagenet.NETS:
        return _train_imagenet(args)
    if args.solver is None:
        raise ValueError(f"--net {args.net}: a net file needs --solver")
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sparknet_ml").setLevel(logging.INFO)
    spark = spark_session(args.master, "sparknet-ml train", args.conf, args.remote)
    try:
        for flag, path in (("--net", args.net), ("--solver", args.solver)):
            if not storage.is_file(path):
                raise FileNotFoundError(f"{flag} {path}: no such file")
        _check_data(args.data)
        check_out(args.out, args.overwrite)
        estimator = SparkNetEstimator(netPrototxt=args.net, solverPrototxt=args.solver,
                                      labelCol=args.label_col, batchSize=args.batch,
                                      syncInterval=args.sync_interval, maxIter=args.rounds,
                                      roundsPerJob=args.rounds_per_job,
                                      numWorkers=args.workers, seed=args.seed,
                                      meanFile=args.mean_file, baseLr=args.base_lr,
                                      showProgress=not args.no_progress)
        data, features_col, data_shape = _read(spark, args.data)
        estimator.setFeaturesCol(args.features_col or features_col)
        estimator.setInputShape(args.input_shape or data_shape)
        model = estimator.fit(data)
        writer = model.write()
        (writer.overwrite() if args.overwrite else writer).save(args.out)
    finally:
        spark.stop()
    if args.plot:
        model.plotHistory(args.plot)
    last = model.history.iloc[-1]
    print(f"trained {int(last['round'])} rounds, last loss {last['loss']:.4f}; "
          f"saved to {args.out}")
    return 0


def _train_imagenet(args) -> int:
    """``train --net caffenet|googlenet``: the ImageNet app on the image folder ``--data``."""
    from .apps import imagenet, log_rounds
    log_rounds()
    report = imagenet.run(argparse.Namespace(**{**vars(args), "workers": args.workers or 2}))
    print(f"{args.net}: {len(report['classes'])} classes, fit {report['fit_seconds']:.0f} s, "
          f"top-1 {report['top1']:.4f}, top-5 {report['top5']:.4f}; saved to {args.out}")
    return 0


def score(args) -> int:
    """Score parquet data or Fashion-MNIST with a saved model into a parquet folder."""
    from . import SparkNetModel
    spark = spark_session(args.master, "sparknet-ml score", args.conf, args.remote)
    try:
        if not storage.is_dir(storage.join(args.model, "metadata")):
            raise FileNotFoundError(f"--model {args.model}: not a saved model (no metadata "
                                    "folder)")
        _check_data(args.data)
        check_out(args.out, args.overwrite, _is_parquet_output, PARQUET_OUTPUT)
        model = SparkNetModel.load(args.model)
        data, features_col, _ = _read(spark, args.data)
        if model.getFeaturesCol() not in data.columns:
            model.setFeaturesCol(features_col)
        scored = model.transform(data)
        with saving_out(args.out, args.overwrite, _is_parquet_output, PARQUET_OUTPUT) as staged:
            scored.write.parquet(staged)
        rows = spark.read.parquet(args.out).count()
    finally:
        spark.stop()
    print(f"scored {rows} rows into {args.out}")
    return 0


PARQUET_OUTPUT = "a folder of parquet part files (what score writes)"


def _is_parquet_output(uri: str) -> bool:
    """Whether ``uri`` is a folder Spark's parquet writer wrote: part files, ``_SUCCESS`` and
    checksums only."""
    return storage.is_dir(uri) and all(
        name.startswith(("part-", "_SUCCESS", "_committed_", "_started_"))
        or (name.startswith(".") and name.endswith(".crc")) for name in storage.list_names(uri))


def export(args) -> int:
    """Write a saved model, or a net and its caffemodel, as an ONNX file."""
    from . import SparkNetModel
    if args.net and args.no_transform:
        raise ValueError("--no-transform applies to --model only (a --net export has no data "
                         "transform: the ONNX model takes the net's own input)")
    for option, given in (("--weights", args.weights), ("--input-shape", args.input_shape)):
        if args.model and given:
            raise ValueError(f"{option} applies to --net only")
    paths = [p for p in (args.model, args.net, args.weights, args.out) if p]
    spark = (spark_session(args.master, "sparknet-ml export", args.conf)
             if any(storage.scheme(p) not in (None, "file") for p in paths) else None)
    try:
        if args.model:
            if not storage.is_dir(storage.join(args.model, "metadata")):
                raise FileNotFoundError(f"--model {args.model}: not a saved model (no metadata "
                                        "folder)")
            model = SparkNetModel.load(args.model)
            if args.output_blobs:
                model.setOutputBlobs(args.output_blobs.split(","))
            model.saveOnnx(args.out, overwrite=args.overwrite,
                           includeTransform=not args.no_transform)
        else:
            _export_net(args)
    finally:
        if spark is not None:
            spark.stop()
    print(f"wrote {args.out}")
    return 0


def _export_net(args) -> None:
    """``--net`` and ``--weights``: the net's deploy form (data layers replaced by an Input,
    losses dropped) with the caffemodel's weights, outputs the blobs no layer consumes."""
    from . import net as netlib
    from .net.prototxt import read_prototxt_file
    from .persistence.caffemodel import read_caffemodel
    from .persistence.onnx_file import onnx_model, write_onnx
    if not args.weights:
        raise ValueError("--net needs --weights (the .caffemodel)")
    text = read_prototxt_file(args.net)
    shape = args.input_shape or netlib.infer_input_shape(text)
    if shape is None:
        raise ValueError(f"--net {args.net}: the net does not state its input's shape; give "
                         "--input-shape C,H,W")
    deploy = netlib.deploy_net(text, shape, 1)
    outputs = args.output_blobs.split(",") if args.output_blobs else None
    write_onnx(args.out, onnx_model(netlib.net_to_text(deploy.net),
                                    read_caffemodel(args.weights), outputs),
               overwrite=args.overwrite)


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


def bench(args) -> int:
    """Run the benchmark scripts of a source checkout, each as ``python SCRIPT [--quick]
    --out RESULTS/NAME.json``; exit code 1 when one fails."""
    import subprocess
    if not os.path.isdir(BENCHMARKS):
        raise FileNotFoundError(f"{BENCHMARKS}: no benchmarks folder; bench runs the scripts "
                                "of a source checkout of sparknet_ml")
    known = sorted(name[:-3] for name in os.listdir(BENCHMARKS)
                   if name.endswith(".py") and not name.startswith("_"))
    if args.list:
        print("\n".join(known))
        return 0
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        raise ValueError(f"no benchmark {', '.join(unknown)}; known: {', '.join(known)}")
    failed = []
    for name in args.names or known:
        command = [sys.executable, os.path.join(BENCHMARKS, f"{name}.py"),
                   "--out", os.path.join(args.results, f"{name.replace('_', '-')}.json")]
        print(f"== {name}", flush=True)
        if subprocess.run(command + (["--quick"] if args.quick else [])).returncode:
            failed.append(name)
    if failed:
        print(f"sparknet-ml: benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


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
    fit.add_argument("--net", required=True,
                     help="net prototxt file (stock Caffe files work), or caffenet / googlenet: "
                          "Caffe's stock ImageNet nets on an image folder (the ImageNet app)")
    fit.add_argument("--solver", help="solver prototxt file (default for caffenet / googlenet: "
                                      "the stock one)")
    fit.add_argument("--mean-file", help="mean image .binaryproto (meanFile)")
    fit.add_argument("--base-lr", type=float, help="overrides the solver's base_lr (baseLr)")
    fit.add_argument("--test-fraction", type=float, default=0.2,
                     help="caffenet / googlenet: held-out share for top-1/top-5 (default 0.2)")
    fit.add_argument("--data", required=True,
                     help="parquet path, image folder (one sub-folder of images per class), or "
                          "fashion-mnist (Debian's dataset-fashion-mnist)")
    add_out_arguments(fit, None, "folder for the saved model")
    fit.add_argument("--features-col",
                     help="default: features (image for an image folder)")
    fit.add_argument("--label-col", default="label")
    fit.add_argument("--input-shape", type=input_shape,
                     help="C,H,W of one example (default: from the net)")
    add_session_arguments(fit)
    fit.add_argument("--workers", type=int, help="numWorkers (default: the data's partitions)")
    fit.add_argument("--sync-interval", type=int, default=50, help="tau (default 50)")
    fit.add_argument("--rounds", type=int, default=40, help="maxIter (default 40)")
    fit.add_argument("--rounds-per-job", type=rounds_per_job, default="auto",
                     help="roundsPerJob: auto (default: barrier-stage jobs of many rounds, "
                          "averaged inside the job, when the cluster has a task slot per "
                          "worker), 1 (a job per round) or k (k rounds per job)")
    fit.add_argument("--batch", type=int, default=64, help="batchSize (default 64)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--plot", help="write a PNG of loss and validation accuracy here")
    fit.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it only shows on a terminal anyway)")
    fit.set_defaults(run=train)
    use = commands.add_parser("score", help="score data with a saved model into parquet",
                              description="Add predictions to data with a saved model.")
    use.add_argument("--model", required=True, help="folder of a saved SparkNetModel")
    use.add_argument("--data", required=True,
                     help="parquet path, image folder, or fashion-mnist-test")
    add_out_arguments(use, None, "parquet folder to write")
    add_session_arguments(use)
    use.set_defaults(run=score)
    onnx = commands.add_parser("export", help="write a model as ONNX",
                               description="Write a saved model, or a Caffe net and its "
                                           "caffemodel, as an ONNX file (opset 21), checked "
                                           "against Caffe's shapes.")
    onnx.add_argument("--onnx", action="store_true", required=True,
                      help="the format (ONNX, the only one)")
    source = onnx.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="folder of a saved SparkNetModel")
    source.add_argument("--net", help="net prototxt file: a deploy net, or a train_val net "
                                      "(its data layers become an Input, losses are dropped)")
    onnx.add_argument("--weights", help="with --net: the .caffemodel")
    onnx.add_argument("--input-shape", type=input_shape,
                      help="with --net: C,H,W of one example (default: from the net)")
    onnx.add_argument("--output-blobs", help="blobs to output, comma-separated (default: the "
                                             "model's output and outputBlobs; for --net, the "
                                             "blobs no layer consumes)")
    onnx.add_argument("--no-transform", action="store_true",
                      help="with --model only (refused with --net, whose export has no "
                           "transform): leave out the data transform (crop, mean, scale); "
                           "the ONNX model then takes the net's own input")
    onnx.add_argument("--out", required=True, help="the .onnx file to write")
    onnx.add_argument("--overwrite", action="store_true", help="replace an existing file")
    onnx.add_argument("--master", help="Spark master, for a Hadoop file system path "
                                       "(default: spark-submit's, else local[2])")
    add_conf_argument(onnx)
    onnx.set_defaults(run=export)
    run = commands.add_parser("bench", help="run the benchmarks of a source checkout",
                              description="Run benchmarks/*.py (each prints a table and "
                                          "writes JSON with its ratios).")
    run.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    run.add_argument("--quick", action="store_true", help="a minutes-long smoke pass")
    run.add_argument("--list", action="store_true", help="list the benchmarks and stop")
    run.add_argument("--results", default=os.path.join(BENCHMARKS, "results"),
                     help="folder for the JSON results (default: benchmarks/results)")
    run.set_defaults(run=bench)
    return parser


# Spark master URLs: local[N], local[N,F], local[*], local-cluster[N,C,M], spark://, yarn,
# k8s://, mesos:// (checked before a JVM starts: a bad one gave a Java trace).
_MASTER = re.compile(r"local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]|yarn|"
                     r"(spark|k8s|mesos)://\S+")


def _check_master(master: str | None) -> None:
    """Before a JVM starts: ``--master`` is a Spark master URL."""
    if master is not None and not _MASTER.fullmatch(master):
        raise ValueError(f"--master {master}: not a Spark master URL (local[N], local[N,F], "
                         "local-cluster[N,C,M], spark://HOST:PORT, yarn, k8s://URL)")


def input_shape(text: str) -> list[int]:
    """``--input-shape``'s value: positive integers separated by commas (C,H,W)."""
    try:
        shape = [int(d) for d in text.split(",")]
    except ValueError:
        shape = []
    if not shape or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W: positive integers separated "
                                         "by commas, e.g. 1,28,28")
    return shape


def main(argv=None) -> int:
    """Entry point of the ``sparknet-ml`` console script."""
    args = _parser().parse_args(argv)

    def run() -> int:
        _check_master(getattr(args, "master", None))
        return args.run(args)
    return run_main("sparknet-ml", run)


if __name__ == "__main__":
    sys.exit(main())
