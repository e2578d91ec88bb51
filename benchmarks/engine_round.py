"""The SparkNet round function (what a Spark task runs) vs raw pycaffe ``solver.step``, on
one device, in one run: LeNet on Fashion-MNIST, no Spark needed.

Raw: the batch already sits in the input blobs and ``solver.step(tau)`` runs. Engine:
``train_round`` with its per-batch gather from the partition block, input transform, state
load/read-out and loss read. Prints img/s of both and ``engine_vs_raw``; writes JSON.

    python benchmarks/engine_round.py [--gpu 0] [--tau 50] [--batch 64] [--out FILE]
"""
import argparse
import json
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--tau", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "engine-round.json"))
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from _machine import machine
    from sparknet_ml import zoo
    from sparknet_ml.data import fashion_mnist
    from sparknet_ml.engine.solver import make_solver, set_device
    from sparknet_ml.engine.worker import TrainSpec, get_state, train_round
    from sparknet_ml.net import parse_net, net_to_text, train_net
    images, labels = fashion_mnist.load("train")
    images = images[:, None]  # uint8 block, as the cache stores pixels
    net = train_net(parse_net(zoo.prototxt("lenet_train_test")), (1, 28, 28), args.batch)
    spec = TrainSpec(net_to_text(net), zoo.prototxt("lenet_solver"), args.batch, gpu=args.gpu,
                     scale=0.00390625)
    set_device(args.gpu)
    solver = make_solver(spec.net_text, spec.solver_text, args.batch)
    solver.net.blobs["data"].data[...] = images[:args.batch] * spec.scale
    solver.net.blobs["label"].data[...] = labels[:args.batch]
    state = get_state(solver)
    solver.step(args.tau)  # warm-up
    started = time.perf_counter()
    for _ in range(args.rounds):
        solver.step(args.tau)
    raw = args.rounds * args.tau * args.batch / (time.perf_counter() - started)
    train_round(spec, images, labels, state, 0, args.tau, 0, 0)  # warm-up, builds the solver
    started = time.perf_counter()
    for r in range(args.rounds):
        state = train_round(spec, images, labels, state, r, args.tau, 0, 0).state
    engine = args.rounds * args.tau * args.batch / (time.perf_counter() - started)
    result = {"benchmark": "engine_round", "machine": machine(),
              "parameters": {**vars(args), "net": "lenet_train_test", "blas_threads":
                             os.environ["OPENBLAS_NUM_THREADS"]},
              "raw_img_s": round(raw, 1), "engine_img_s": round(engine, 1),
              "engine_vs_raw": round(engine / raw, 3)}
    print(json.dumps(result))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
