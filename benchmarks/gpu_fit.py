"""SparkNet's scheme on one GPU without Spark (the GPU machine has no Java): per round, two
workers' ``train_round`` on the two halves of Fashion-MNIST's 60,000 training images, then
``average_results``, exactly what a fit's tasks and driver run. LeNet (the zoo's
``lenet_train``), test accuracy on the 10,000 test images every 10 rounds with the scoring
functions ``SparkNetModel`` uses. Prints the accuracy against training time (scoring excluded)
and writes JSON. Needs a CUDA pycaffe and a GPU; elsewhere it says so and exits 0.

    python benchmarks/gpu_fit.py [--gpu 0] [--tau 50] [--rounds 40] [--batch 64] [--out FILE]
"""
import argparse
import dataclasses
import os
import sys
import time

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device (default 0)")
    parser.add_argument("--tau", type=int, default=50, help="iterations per round (default 50)")
    parser.add_argument("--rounds", type=int, default=40, help="rounds (default 40)")
    parser.add_argument("--batch", type=int, default=64, help="batch per worker (default 64)")
    parser.add_argument("--quick", action="store_true", help="10 rounds")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "gpu-fit.json"))
    return parser.parse_args()


def main():
    args = parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe loads glog
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _machine import machine, write
    from sparknet_ml.build.command import installed_build_info
    info = installed_build_info()
    if not (info or {}).get("cuda") or not machine()["gpu"]:
        print("gpu_fit: skipped: needs a CUDA pycaffe and a visible GPU")
        return
    import caffe
    from google.protobuf import text_format
    from sparknet_ml import zoo
    from sparknet_ml.data import fashion_mnist
    from sparknet_ml.engine.scoring import ScoreSpec, cached_net, forward
    from sparknet_ml.engine.solver import make_solver, net_with_batch
    from sparknet_ml.engine.transform import Transform
    from sparknet_ml.engine.worker import (TrainSpec, average_results, get_state,
                                           named_weights, train_round)
    rounds = 10 if args.quick else args.rounds
    images, labels = fashion_mnist.load("train")
    test_images, test_labels = fashion_mnist.load("test")
    halves = [(images[i::2, None].copy(), labels[i::2].astype(np.float32)) for i in range(2)]
    spec = TrainSpec(zoo.prototxt("lenet_train"), zoo.prototxt("lenet_solver"), args.batch,
                     gpu=args.gpu, transform=Transform(0.00390625))
    caffe.set_mode_cpu()  # the initial weights come from the driver's CPU solver, as in a fit
    caffe.set_random_seed(0)
    solver = make_solver(spec.net_text, spec.solver_text, args.batch)
    layout = [(name, len(blobs)) for name, blobs in solver.net.params.items()]
    state = get_state(solver)
    score = ScoreSpec(text_format.MessageToString(net_with_batch(spec.net_text, 500)), 500,
                      "data", ("ip2",), args.gpu)
    test = test_images[:, None].astype(np.float32) * np.float32(spec.scale)
    seconds, timeline = 0.0, []
    for r in range(rounds):
        started = time.perf_counter()
        results = []
        for i, (x, y) in enumerate(halves):  # one solver for both: copy its state vector out
            result = train_round(spec, x, y, state, r, args.tau, 0, i)
            results.append(dataclasses.replace(result, state=result.state.copy()))
        state, samples, loss = average_results(results, state)
        seconds += time.perf_counter() - started
        if (r + 1) % 10 == 0 or r == rounds - 1:
            weights = named_weights(state, layout)
            logits = forward(cached_net(score, f"round {r}", weights), score, test)[0]
            point = {"round": r + 1, "train_seconds": round(seconds, 2), "loss": round(loss, 4),
                     "test_accuracy": float((logits.argmax(axis=1) == test_labels).mean()),
                     "img_s": round((r + 1) * 2 * args.tau * args.batch / seconds, 1)}
            timeline.append(point)
            print("  ".join(f"{k}={v}" for k, v in point.items()), flush=True)
    write({"benchmark": "gpu_fit", "caffe_build": info,
           "parameters": {"gpu": args.gpu, "tau": args.tau, "rounds": rounds,
                          "batch": args.batch, "workers": 2, "net": "zoo lenet_train",
                          "solver": "zoo lenet_solver", "seed": 0},
           "timeline": timeline}, args.out)


if __name__ == "__main__":
    main()
