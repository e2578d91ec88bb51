"""Where a training iteration's GPU time goes, Caffe against PyTorch on one GPU, in one run:
the profile behind gpu_caffe.py's and imagenet_torch.py's misses.

Every kernel, memset and copy of N iterations is traced with CUPTI (``_cupti.py``; the same
tracer in both processes), and per iteration this gives: ``wall_us`` (traced, so a little
above gpu_caffe.py's untraced time), ``records`` (kernels + memsets + copies), ``busy_us`` (the
GPU running them), ``idle_us`` (gaps between them within the iterations' span: launch latency
that a CUDA graph does not hide, host syncs), µs by category (convolution, gemm, pooling,
update, ...) and the kernels with the most time. Cases: LeNet and cifar10_quick at batch 64
and 256 in fp32, Caffe's CUDA-graph replay against PyTorch's; CaffeNet at batch 128 with TF32
on both sides, Caffe's plain iterations (Dropout keeps its graph off) against PyTorch's graph.
Nets, data and optimizers are gpu_caffe.py's. PyTorch runs in a child process (its own cuDNN).
Needs a CUDA + cuDNN pycaffe, a GPU, torch and CUPTI; elsewhere it says so and exits 0.

    python benchmarks/gpu_step_profile.py [--quick] [--gpu 0] [--out FILE]
"""
import argparse
import json
import os
import sys
import time

CASES = (("lenet", 64, False), ("lenet", 256, False), ("cifar10_quick", 64, False),
         ("cifar10_quick", 256, False), ("caffenet", 128, True))


def iterations_of(net, quick):
    return (5 if quick else 20) if net == "caffenet" else (50 if quick else 200)


def caffe_profile(net, batch, gpu, tf32, iterations):
    from _cupti import KernelTrace, summary
    from gpu_caffe import caffe_solver, data_for
    solver = caffe_solver(net, batch, gpu, "default", tf32, data_for(net, batch))
    solver.step(10)  # algorithms chosen, the graph captured
    first = solver.net.params[next(iter(solver.net.params))][0]
    with KernelTrace() as trace:
        started = time.perf_counter()
        solver.step(iterations)
        float(first.data.flat[0])  # a copy to the host: waits for the last update
        wall = time.perf_counter() - started
    import caffe
    caffe.set_tf32(False)
    return {**summary(trace.records, iterations, wall), "unparsed": trace.unparsed,
            "graph_replays": solver.cuda_graph_replays,
            "graph_refusal": solver.cuda_graph_refusal}


def torch_child(args):
    import torch
    from _cupti import KernelTrace, summary
    from _torch_step import eager_and_graph
    from gpu_caffe import data_for, torch_step
    rows = {}
    for net, batch, tf32 in CASES:
        _, replay = eager_and_graph(*torch_step(net, args.gpu, tf32, data_for(net, batch)))
        iterations = iterations_of(net, args.quick)
        for _ in range(10):
            replay()
        torch.cuda.synchronize()
        with KernelTrace() as trace:
            started = time.perf_counter()
            for _ in range(iterations):
                replay()
            torch.cuda.synchronize()
            wall = time.perf_counter() - started
        rows[f"{net}/{batch}"] = {**summary(trace.records, iterations, wall),
                                  "unparsed": trace.unparsed}
    print(json.dumps(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer traced iterations")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device (default 0)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "gpu-step-profile.json"))
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.torch_child:
        return torch_child(args)
    from _machine import machine, write
    from gpu_caffe import unavailable
    from sparknet_ml.build.command import installed_build_info
    info = installed_build_info()
    reason = unavailable(info, machine()["gpu"])
    if reason:
        print(f"gpu_step_profile: skipped: {reason}")
        return
    from _torch_step import child_result
    torch = child_result(__file__, args.gpu, args.quick)
    rows = []
    for net, batch, tf32 in CASES:
        caffe = caffe_profile(net, batch, args.gpu, tf32, iterations_of(net, args.quick))
        row = {"net": net, "batch": batch, "tf32": tf32, "caffe": caffe,
               "torch": torch[f"{net}/{batch}"]}
        rows.append(row)
        for side in ("caffe", "torch"):
            s = row[side]
            print(f"{net}/{batch}{' tf32' if tf32 else ''} {side}: {s['wall_us']} us/iter, "
                  f"{s['records']} records, busy {s['busy_us']} us, idle {s['idle_us']} us; "
                  + ", ".join(f"{k} {v}" for k, v in s["by_category_us"].items()), flush=True)
            for kernel in s["top"]:
                print(f"    {kernel['us']:8.1f} us  x{kernel['per_iter']:<5} {kernel['name']}")
    write({"benchmark": "gpu_step_profile", "caffe_build": info,
           "parameters": {"gpu": args.gpu, "quick": args.quick, "warmup_iterations": 10},
           "rows": rows}, args.out)


if __name__ == "__main__":
    main()
