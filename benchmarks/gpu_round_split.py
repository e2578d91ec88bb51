"""Where a GPU training round's time goes beyond raw ``solver.step(tau)``: medians of
interleaved passes, on one GPU, without Spark (the GPU machine has no Java).

Per net and batch, in ms per round: raw ``step(tau)`` (one batch kept in the blobs); the
resident net's bare ``step(tau)`` (its feed: SparkNetRows rows, BatchReindex gather); the same
as one ``step(1)`` and loss read per iteration (what ``train_round`` does); plus
``set_state``/``get_state``; and the whole ``train_round``. Needs a CUDA pycaffe and a GPU;
elsewhere it says so and exits 0.

    python benchmarks/gpu_round_split.py [--gpu 0] [--quick] [--out FILE]
"""
import argparse
import os
import sys
import tempfile

from _machine import interleaved, machine, write

STAGES = ("raw_step", "resident_step", "resident_step1_loop", "with_state", "train_round")


def split(net, batch, gpu, tau, repeat, directory):
    """Median seconds per round of each of :data:`STAGES`."""
    from engine import block_of, images_for, raw_solver, train_specs
    from sparknet_ml.engine import worker
    spec = train_specs(net, batch, gpu)
    x, y = images_for(net, 8192)
    block_x, block_y = block_of(x, y, directory)
    raw = raw_solver(spec, x, y)
    state = worker.get_state(raw)
    worker.train_round(spec, block_x, block_y, state, 0, tau, 0, 0)  # uploads the block
    solver = worker.cached_solver(spec)
    loss = solver.net.blobs[solver.net.outputs[0]]

    def step1_loop():
        for _ in range(tau):
            solver.step(1)
            float(loss.data)
    return interleaved([
        lambda: raw.step(tau), lambda: solver.step(tau), step1_loop,
        lambda: (worker.set_state(solver, state), solver.step(tau), worker.get_state(solver)),
        lambda: worker.train_round(spec, block_x, block_y, state, 0, tau, 0, 0)], repeat)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device (default 0)")
    parser.add_argument("--quick", action="store_true", help="5 passes instead of 21")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "gpu-round-split.json"))
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe loads glog
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparknet_ml.build.command import installed_build_info
    info = installed_build_info()
    if not (info or {}).get("cuda") or not machine()["gpu"]:
        print("gpu_round_split: skipped: needs a CUDA pycaffe and a visible GPU")
        return
    from sparknet_ml.engine.solver import set_device
    set_device(args.gpu)
    tau, repeat = 50, 5 if args.quick else 21
    rows = []
    for net in ("lenet", "cifar10_quick"):
        for batch in (64, 256):
            with tempfile.TemporaryDirectory() as directory:
                ms = [round(s * 1e3, 2) for s in split(net, batch, args.gpu, tau, repeat,
                                                       directory)]
            row = {"net": net, "batch": batch, **{f"{k}_ms": v for k, v in zip(STAGES, ms)},
                   "engine_vs_raw": round(ms[0] / ms[-1], 3)}
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            rows.append(row)
    write({"benchmark": "gpu_round_split", "caffe_build": info,
           "parameters": {"gpu": args.gpu, "tau": tau, "passes": repeat,
                          "timing": "medians of interleaved passes"}, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
