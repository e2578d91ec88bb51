"""Raw pycaffe training speed of the built Caffe: LeNet and cifar10_quick, batch 64 and 256,
CPU vs GPU (when the build has CUDA and a GPU is visible), in one run.

The data is already in the input blobs (real Fashion-MNIST images; for cifar10_quick padded to
32x32 and repeated over 3 channels), so this times ``solver.step`` alone. Prints a table and
writes JSON with ``gpu_vs_cpu`` ratios.

    python benchmarks/caffe_speed.py [--quick] [--blas-threads 1] [--out FILE]
"""
import argparse
import os
import sys
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="OpenBLAS threads for the CPU runs (default 1, one per worker)")
    parser.add_argument("--devices", default="auto", help="cpu, gpu, cpu,gpu or auto")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "caffe-speed.json"))
    return parser.parse_args()


def batch_of(net, images, labels, batch):
    import numpy as np
    x = images[:batch, None] / np.float32(255)
    if net == "cifar10_quick":
        x = np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    return x, labels[:batch]


def images_per_second(net, batch, gpu, data, seconds):
    """Time solver.step on one batch held in the input blobs; return img/s."""
    import caffe
    from sparknet_ml import zoo
    from sparknet_ml.engine.solver import make_solver, set_device
    set_device(gpu)
    caffe.set_random_seed(0)
    solver = make_solver(zoo.prototxt(f"{net}_train"), zoo.prototxt(f"{net}_solver"), batch)
    solver.net.blobs["data"].data[...], solver.net.blobs["label"].data[...] = data
    solver.step(5)  # warm-up: allocations, cuBLAS handles, first kernels
    steps, started = 0, time.perf_counter()
    while steps < 10 or time.perf_counter() - started < seconds:
        solver.step(5)
        steps += 5
    return steps * batch / (time.perf_counter() - started)


def main():
    args = parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)  # read when OpenBLAS loads
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from _machine import write
    from sparknet_ml.build.command import installed_build_info
    from sparknet_ml.data import fashion_mnist
    os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe loads glog
    info = installed_build_info()
    devices = args.devices.split(",") if args.devices != "auto" else (
        ["cpu", "gpu"] if info["cuda"] else ["cpu"])
    images, labels = fashion_mnist.load("train")
    seconds = 1.0 if args.quick else 4.0
    rows = []
    for net in ("lenet", "cifar10_quick"):
        for batch in (64, 256):
            data = batch_of(net, images, labels, batch)
            row = {"net": net, "batch": batch}
            for device in devices:
                row[f"{device}_img_s"] = round(images_per_second(
                    net, batch, 0 if device == "gpu" else None, data, seconds), 1)
            if "cpu" in devices and "gpu" in devices:
                row["gpu_vs_cpu"] = round(row["gpu_img_s"] / row["cpu_img_s"], 2)
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    result = {"benchmark": "caffe_speed", "caffe_build": info,
              "parameters": {"blas_threads": args.blas_threads, "min_seconds": seconds,
                             "warmup_steps": 5, "solver": "zoo *_solver.prototxt (SGD)"},
              "rows": rows}
    write(result, args.out)


if __name__ == "__main__":
    main()
