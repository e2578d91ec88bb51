"""GPU memory of one worker process over a sweep of fits, as a CrossValidator over baseLr runs
them: every fit has another base_lr, so another solver, each holding its resident block on the
device. Device memory in use after fit 1 and after the last fit, with the worker's solver cache
as shipped (``MAX_CACHED_SOLVERS``) and, in a second process, unbounded (what it was before).
cifar10_quick, a resident block of 10,000 examples (3x32x32 float32, 123 MB), batch 256, one
round of tau=10 per fit, on GPU 0. Needs a CUDA pycaffe, a GPU and CuPy (for cudaMemGetInfo).

    python benchmarks/gpu_sweep_memory.py [--fits 20] [--out FILE]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def sweep(fits: int, bound: int) -> dict:
    """Run ``fits`` fits in this process with at most ``bound`` cached solvers."""
    import caffe
    import cupy
    from sparknet_ml import zoo
    from sparknet_ml.engine import worker
    from sparknet_ml.engine.solver import make_solver
    from sparknet_ml.engine.transform import Transform
    worker._SOLVERS.size = bound

    def used_mb():
        free, total = cupy.cuda.runtime.memGetInfo()
        return round((total - free) / 2 ** 20)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10_000, 3, 32, 32), np.uint8)
    y = rng.integers(0, 10, 10_000).astype(np.float32)
    net, solver_text = zoo.prototxt("cifar10_quick_train"), zoo.prototxt("cifar10_quick_solver")
    caffe.set_mode_cpu()
    state = worker.get_state(make_solver(net, solver_text, 256))
    before, after = used_mb(), []
    for fit in range(fits):
        spec = worker.TrainSpec(net, solver_text.replace("base_lr: 0.001",
                                                         f"base_lr: {0.001 + fit / 1e5}"),
                                256, gpu=0, resident=True, transform=Transform(1 / 256))
        worker.train_round(spec, x, y, state, 0, 10, 0, 0)
        after.append(used_mb())
    return {"bound": bound, "fits": fits, "before_mb": before, "after_fit_1_mb": after[0],
            "after_last_fit_mb": after[-1], "cached_solvers": len(worker._SOLVERS)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fits", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="4 fits")
    parser.add_argument("--bound", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu-sweep-memory.json"))
    args = parser.parse_args()
    if args.quick:
        args.fits = 4
    sys.path.insert(0, os.path.dirname(HERE))
    if args.bound is not None:
        print(json.dumps(sweep(args.fits, args.bound)))
        return 0
    from _machine import write
    from sparknet_ml.build.command import installed_build_info
    from sparknet_ml.engine.worker import MAX_CACHED_SOLVERS
    if not (installed_build_info() or {}).get("cuda"):
        print("gpu_sweep_memory: skipped: needs a CUDA pycaffe and a GPU")
        return 0
    rows = []
    for bound in (MAX_CACHED_SOLVERS, 10_000):
        done = subprocess.run([sys.executable, __file__, "--fits", str(args.fits),
                               "--bound", str(bound)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    write({"benchmark": "gpu_sweep_memory", "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
