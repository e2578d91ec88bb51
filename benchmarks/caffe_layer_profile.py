"""Where a training step of Caffe's stock CaffeNet and GoogLeNet spends its time, layer type by
layer type, on one GPU: the profile behind imagenet_torch.py's ratios.

Each layer's forward and backward are timed alone (``Net._forward(i, i)``,
``Net._backward(i, i)``) with ``CUDA_LAUNCH_BLOCKING=1`` (set by this script before Caffe
loads), so a layer's time includes its kernels; the solver's update is a step's time less the
layers'. Shares are of that (blocking) step.

    python benchmarks/caffe_layer_profile.py [--gpu 0] [--batch 256] [--out FILE]
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np

os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
os.environ.setdefault("GLOG_minloglevel", "2")

STOCK = {"caffenet": ("bvlc_reference_caffenet", 227), "googlenet": ("bvlc_googlenet", 224)}


def timed(fn, repeat):
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def profile(net_name, batch, gpu, repeat):
    import caffe
    from sparknet_ml import net as netlib, zoo
    from sparknet_ml.engine.solver import make_solver
    name, size = STOCK[net_name]
    text = netlib.net_to_text(netlib.train_net(zoo.prototxt(f"{name}_train_val"),
                                               (3, size, size), batch))
    if gpu < 0:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    solver = make_solver(text, zoo.prototxt(f"{name}_solver"), batch)
    net = solver.net
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.normal(0, 50, net.blobs["data"].data.shape)
    net.blobs["label"].data[...] = rng.integers(0, 1000, batch)
    step = timed(lambda: solver.step(1), repeat)
    net.forward()
    by_type = defaultdict(lambda: [0.0, 0.0])
    for i, layer in enumerate(net.layers):
        by_type[layer.type][0] += timed(lambda: net._forward(i, i), repeat)
        by_type[layer.type][1] += timed(lambda: net._backward(i, i), repeat)
    layers = sum(f + b for f, b in by_type.values())
    rows = sorted(({"type": t, "forward_ms": round(f * 1e3, 2), "backward_ms": round(b * 1e3, 2),
                    "share": round((f + b) / step, 3)} for t, (f, b) in by_type.items()),
                  key=lambda r: -r["share"])
    rows.append({"type": "solver update (step - layers)",
                 "ms": round((step - layers) * 1e3, 2), "share": round(1 - layers / step, 3)})
    return {"net": net_name, "batch": batch, "step_ms": round(step * 1e3, 2),
            "img_s_blocking": round(batch / step, 1), "by_type": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=0, help="-1: the CPU")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 8, one repeat")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "caffe-layer-profile.json"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _machine import write
    from sparknet_ml.build.command import installed_build_info
    if args.gpu >= 0 and not (installed_build_info() or {}).get("cuda"):
        print("caffe_layer_profile: skipped: --gpu needs a CUDA pycaffe (--gpu -1: the CPU)")
        return
    if args.quick:
        args.batch, args.repeat = 8, 1
    results = []
    for net in STOCK:
        results.append(profile(net, args.batch, args.gpu, args.repeat))
        print(json.dumps(results[-1]), flush=True)
    write({"benchmark": "caffe_layer_profile", "rows": results}, args.out)


if __name__ == "__main__":
    main()
