"""Many GPUs: E(N) of SparkNet rounds with the in-job averaging, without Spark (the GPU machines
have no Java): N processes with one GPU each run what a barrier task runs, ``train_job`` on
their block, averaging with the others over loopback TCP (reduce-scatter + all-gather; with
one process the state stays in the solver between rounds), with the stock CaffeNet / GoogLeNet files and their TRAIN transforms (random crop,
mirror, mean) on random 3x256x256 uint8 blocks.

E(N) = samples/s over all N processes (a timed job of ``--rounds`` rounds, its start and end
included) / (N x raw ``solver.step`` samples/s of one process on
one GPU, measured first in its own process). Per configuration: the round's split (compute,
averaging, the rest), the state's size, and the bytes a task sends per round with this
averaging (2 (N-1)/N x state) and with the star through partition 0 it replaced ((N-1) x
state in and out of partition 0's task).

    python benchmarks/gpu_scaling.py [--nets caffenet googlenet] [--gpus 1 2 4]
                                     [--taus 1 10 50] [--batch 128] [--rounds 4] [--cpu]
                                     [--quick] [--out FILE]

``--cpu``: every process on the CPU (a smoke run of the same code on any machine).
"""
import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _imports():
    sys.path[:0] = [os.path.dirname(HERE), HERE]
    os.environ.setdefault("GLOG_minloglevel", "2")


def block(rows: int, seed: int):
    """Random stored examples (3x256x256 uint8) and ImageNet labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (rows, 3, 256, 256), np.uint8)
    y = rng.integers(0, 1000, rows).astype(np.float32)
    return x, y


def raw_rate(net: str, batch: int, tau: int, gpu, repeat: int = 3) -> float:
    """Raw ``solver.step`` img/s on one device, the batch already transformed in the blob."""
    _imports()
    from imagenet_engine import plan
    from sparknet_ml.engine.solver import make_solver, set_device
    spec, _, _ = plan(net, batch, gpu)
    set_device(gpu)
    solver = make_solver(spec.net_text, spec.solver_text, batch)
    x, y = block(batch, 0)
    spec.transform.apply(x, out=solver.net.blobs["data"].data)
    solver.net.blobs["label"].data[...] = y
    solver.step(2)
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        solver.step(tau)
        seconds.append(time.perf_counter() - started)
    return batch * tau / statistics.median(seconds)


def task(rank: int, world: int, args, ports, addresses, results) -> None:
    """One barrier task: its block, then ``train_job`` (the barrier task's rounds: a job of
    one warm-up round, then a timed job of ``rounds`` rounds)."""
    if not args["cpu"]:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(rank)
    _imports()
    import caffe
    from imagenet_engine import plan
    from sparknet_ml.engine.solver import make_solver
    from sparknet_ml.engine.state import flatten
    from sparknet_ml.engine.worker import get_state
    from sparknet_ml.tasks.averaging import Averager
    from sparknet_ml.tasks.rounds import train_job
    from sparknet_ml.tasks.states import Job
    gpu = None if args["cpu"] else 0
    spec, _, _ = plan(args["net"], args["batch"], gpu)
    x, y = block(args["batch"] * 8, rank)
    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    start = get_state(make_solver(spec.net_text, spec.solver_text, args["batch"]))
    weights = sum(a.size for a in start.weights)
    listener = socket.create_server(("127.0.0.1", 0), backlog=world)
    ports.put((rank, listener.getsockname()[1]))
    with Averager.connect(rank, listener, addresses.get(), "benchmark-key") as averager:
        _, state = train_job(spec, x, y, rank, Job("warm-up", 0, 1, weights, flatten(start)),
                             args["tau"], 0, averager)  # the solver built, the block loaded
        started = time.perf_counter()
        rounds, _ = train_job(spec, x, y, rank,
                              Job("timed", 1, 1 + args["rounds"], weights, state),
                              args["tau"], 0, averager)
        job_seconds = time.perf_counter() - started
    if rank == 0:
        mine = [next(r.seconds for r in job.results if r.partition == rank) for job in rounds]
        results.put({"rounds": [(job.seconds, compute, job.average_seconds)
                                for job, compute in zip(rounds, mine)],
                     "job_seconds": job_seconds, "state_bytes": state.nbytes})


def run(net: str, world: int, tau: int, args) -> dict:
    """N tasks in their own processes; rank 0's round times."""
    context = multiprocessing.get_context("spawn")
    ports, results = context.Queue(), context.Queue()
    inboxes = [context.Queue() for _ in range(world)]
    config = {"net": net, "batch": args.batch, "tau": tau, "rounds": args.rounds,
              "cpu": args.cpu}
    processes = [context.Process(target=task, args=(rank, world, config, ports, inboxes[rank],
                                                    results)) for rank in range(world)]
    for p in processes:
        p.start()
    found = dict(ports.get(timeout=600) for _ in range(world))
    for inbox in inboxes:
        inbox.put([("127.0.0.1", found[rank]) for rank in range(world)])
    report = results.get(timeout=3600)
    for p in processes:
        p.join(60)
        if p.exitcode:
            raise RuntimeError(f"task {p.name} exited with {p.exitcode}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["caffenet", "googlenet"])
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--taus", nargs="+", type=int, default=[1, 10, 50])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (after one warm-up)")
    parser.add_argument("--cpu", action="store_true", help="every process on the CPU")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: CaffeNet, N = 1 and 2, tau 1, batch 4, 2 rounds "
                             "(on the CPU where pycaffe has no CUDA)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu-scaling.json"))
    args = parser.parse_args()
    _imports()
    from _machine import write
    from sparknet_ml.build.command import installed_build_info
    if args.quick:
        args.nets, args.gpus, args.taus, args.batch, args.rounds = ["caffenet"], [1, 2], [1], 4, 2
        args.cpu = args.cpu or not (installed_build_info() or {}).get("cuda")
    elif not args.cpu and not (installed_build_info() or {}).get("cuda"):
        print("gpu_scaling: skipped: needs a CUDA pycaffe and GPUs (--cpu or --quick: the CPU)")
        return 0
    from _spark import table
    rows = []
    for net in args.nets:
        for tau in args.taus:
            raw = raw_rate(net, args.batch, tau, None if args.cpu else 0)
            for world in args.gpus:
                report = run(net, world, tau, args)
                times = np.array(report["rounds"])
                round_s, compute_s, average_s = (float(np.median(times[:, i])) for i in range(3))
                # the whole job: its rounds and the state's entry and exit
                rate = world * args.batch * tau * len(times) / report["job_seconds"]
                state_mib = report["state_bytes"] / 2 ** 20
                rows.append({
                    "net": net, "tau": tau, "N": world, "raw_img_s": round(raw, 1),
                    "img_s": round(rate, 1), "E": round(rate / (world * raw), 3),
                    "round_s": round(round_s, 3), "compute_s": round(compute_s, 3),
                    "average_s": round(average_s, 3),
                    "rest_s": round(round_s - compute_s - average_s, 3),
                    "state_mib": round(state_mib, 1),
                    "sent_per_task_mib": round(2 * (world - 1) / world * state_mib, 1),
                    "star_root_mib": round(2 * (world - 1) * state_mib, 1)})
                print(rows[-1], flush=True)
    print(table(rows, list(rows[0])))
    write({"benchmark": "gpu_scaling", "batch": args.batch, "rounds": args.rounds,
           "device": "cpu" if args.cpu else "gpu", "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
