"""LeNet on Fashion-MNIST with plain pycaffe in one process: the baseline SparkNet distributes.

    python -m sparknet_ml.apps.fashion_mnist_pycaffe [--iters 1000] [--batch 64] [--gpu 0]

Prints the training loss as it goes, then test accuracy on the 10,000 test images and img/s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def evaluate(solver, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Return the accuracy of the solver's current weights on ``images``."""
    import caffe
    from google.protobuf import text_format
    from sparknet_ml import zoo
    from sparknet_ml.engine.solver import net_with_batch, prototxt_file
    with prototxt_file(text_format.MessageToString(
            net_with_batch(zoo.prototxt("lenet_train"), batch))) as path:
        net = caffe.Net(path, caffe.TEST)
    net.share_with(solver.net)
    correct = 0
    for start in range(0, len(images) - batch + 1, batch):
        net.blobs["data"].data[...] = images[start:start + batch, None] / np.float32(255)
        net.blobs["label"].data[...] = labels[start:start + batch]
        net.forward()
        correct += int((net.blobs["ip2"].data.argmax(axis=1) == labels[start:start + batch]).sum())
    return correct / (len(images) // batch * batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=1000, help="SGD iterations (default 1000)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--gpu", type=int, default=None, help="GPU id (default: CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # read when OpenBLAS loads
    from sparknet_ml import zoo
    from sparknet_ml.data import fashion_mnist
    from sparknet_ml.engine.solver import make_solver, set_device
    import caffe

    train_x, train_y = fashion_mnist.load("train")
    test_x, test_y = fashion_mnist.load("test")
    set_device(args.gpu)
    caffe.set_random_seed(args.seed)
    order = np.random.default_rng(args.seed).permutation(len(train_x))
    solver = make_solver(zoo.prototxt("lenet_train"), zoo.prototxt("lenet_solver"), args.batch)
    started = time.perf_counter()
    for it in range(args.iters):
        rows = order[np.arange(it * args.batch, (it + 1) * args.batch) % len(order)]
        solver.net.blobs["data"].data[...] = train_x[rows, None] / np.float32(255)
        solver.net.blobs["label"].data[...] = train_y[rows]
        solver.step(1)
        if (it + 1) % max(1, args.iters // 10) == 0:
            print(f"iter {it + 1:5d}  loss {float(solver.net.blobs['loss'].data):.4f}", flush=True)
    seconds = time.perf_counter() - started
    accuracy = evaluate(solver, test_x, test_y)
    device = "CPU" if args.gpu is None else f"GPU {args.gpu}"
    print(f"LeNet, {args.iters} iterations of batch {args.batch} on {device}: "
          f"{args.iters * args.batch / seconds:.0f} img/s, test accuracy {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
