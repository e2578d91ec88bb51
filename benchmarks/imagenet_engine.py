"""The worker engine on Caffe's stock CaffeNet and GoogLeNet, with their data transforms,
against raw pycaffe, in one run, no Spark (the GPU machine has no Java).

1. train: ``train_round`` on a block of stored 3x256x256 uint8 examples with the stock TRAIN
   transform (random crop 227 / 224, random mirror, CaffeNet's mean image or GoogLeNet's mean
   values; on a GPU the block stays in the net and the SparkNetTransform layer transforms on
   the device) vs raw ``solver.step`` with a batch already transformed in the input blob;
   ``engine_vs_raw`` (goal >= 0.95): the round as a barrier job of one task runs it, the
   state kept in the solver from round to round (``keep=True``); ``round_trip_vs_raw``: the
   round with the state loaded from and read out to host arrays (a job per round, or a task
   averaging with others); at tau 10 and 50. Its split: ``engine_step_vs_raw`` (the
   engine's solver stepping tau times: draws, SparkNetTransform, block gather) and the
   round's state load and read-out (``state_in_s``, ``state_out_s``: the state vector
   between the solver's own host buffer and the net, on a GPU pinned, one copy each way, as
   a barrier task averaging with others moves it; ``state_in_from_another_vector_s``: the
   load from a vector of its own, as a job per round does); ``one_step_at_a_time_vs_step``:
   tau ``step(1)`` calls each reading the loss back (the rounds before) against one
   ``step(tau)`` (the rounds now);
   ``blob_by_blob_in_s``/``out_s``: ``set_state``/``get_state`` for contrast;
   ``state_in_out_vs_pinned_copy``: in + out against PyTorch's plain pinned copy of the same
   bytes both ways, measured in the same run, goal <= 1.5).
2. score: an Arrow RecordBatch of binary uint8 examples -> ``features_to_array`` (uint8) ->
   batched ``forward`` with the center crop and mean (on a GPU: uint8 uploaded four to a
   float, transformed by the SparkNetTransform layer; ``SparkNetModel``'s task without Spark)
   vs a raw forward loop over batches already transformed in memory; ``scoring_vs_raw``
   (goal >= 0.90).

    python benchmarks/imagenet_engine.py [--gpu 0] [--quick] [--nets caffenet googlenet]
        [--batches 128 256] [--taus 10 50] [--repeat 5] [--out FILE]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from _machine import interleaved, write

NETS = {"caffenet": "bvlc_reference_caffenet", "googlenet": "bvlc_googlenet"}
SHAPE = (3, 256, 256)


def plan(net, batch, gpu):
    """The stock net's TrainSpec (resident on a GPU), deploy net and TEST transform."""
    from caffe.proto import caffe_pb2
    from sparknet_ml import net as netlib, zoo
    from sparknet_ml.engine.worker import TrainSpec
    text = zoo.prototxt(f"{NETS[net]}_train_val")
    rng = np.random.default_rng(0)
    mean = rng.uniform(90, 130, SHAPE).astype(np.float32) if net == "caffenet" else None
    train, test = (netlib.resolve_transform(*netlib.data_transform(text, phase), SHAPE, mean,
                                            "random mean image")
                   for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST))
    crop = train.output_shape(SHAPE)
    spec = TrainSpec(netlib.net_to_text(netlib.train_net(text, crop, batch)),
                     zoo.prototxt(f"{NETS[net]}_solver"), batch, gpu=gpu, transform=train,
                     resident=gpu is not None)
    return spec, netlib.deploy_net(text, crop, batch), test


def bench_train(spec, x, y, tau, repeat):
    from sparknet_ml.engine.solver import make_solver, packable
    from sparknet_ml.engine.state import flatten
    from sparknet_ml.engine.worker import (cached_solver, get_state, load_state, read_state,
                                           set_state, train_round)
    solver = make_solver(spec.net_text, spec.solver_text, spec.batch_size)
    spec.transform.apply(x[:spec.batch_size], out=solver.net.blobs["data"].data)
    solver.net.blobs["label"].data[...] = y[:spec.batch_size]
    state = get_state(solver)
    train_round(spec, x, y, state, 0, tau, 0, 0)  # builds the engine's solver
    engine_solver = cached_solver(spec, spec.resident and packable(spec.transform, x))
    vector = flatten(state)
    buffer = read_state(engine_solver, spec)  # the solver's own (pinned) vector

    loss = next(engine_solver.net.blobs[name] for name, weight in
                engine_solver.net.blob_loss_weights.items() if weight)
    # Reading a blob Caffe last wrote on the device waits for the device: every timing
    # includes the work its call queued. (Not the loss blob: its loss layer writes it on the
    # host, so reading it waits for nothing.)
    first = next(iter(engine_solver.net.params.values()))[0]

    def one_by_one():  # how rounds stepped before: tau calls, each reading the loss back
        for _ in range(tau):
            engine_solver.step(1)
            float(loss.data.sum())
    (raw, engine, trip, step, stepped_singly, state_in, state_in_copied, state_out,
     blobs_in, blobs_out) = interleaved(
        [lambda: solver.step(tau),
         lambda: train_round(spec, x, y, None, 0, tau, 0, 0, keep=True),
         lambda: train_round(spec, x, y, state, 0, tau, 0, 0),
         lambda: engine_solver.step(tau), one_by_one,
         lambda: load_state(engine_solver, spec, buffer),
         lambda: load_state(engine_solver, spec, vector),
         lambda: read_state(engine_solver, spec), lambda: set_state(engine_solver, state),
         lambda: get_state(engine_solver)], repeat, wait=lambda: float(first.data.flat[0]))
    row = {"tau": tau, "raw_img_s": round(spec.batch_size * tau / raw, 1),
           "engine_img_s": round(spec.batch_size * tau / engine, 1),
           "engine_vs_raw": round(raw / engine, 3), "resident": spec.resident,
           "round_trip_vs_raw": round(raw / trip, 3),
           "engine_step_vs_raw": round(raw / step, 3),
           "one_step_at_a_time_vs_step": round(step / stepped_singly, 3),
           "state_in_s": round(state_in, 4), "state_out_s": round(state_out, 4),
           "state_in_from_another_vector_s": round(state_in_copied, 4),
           "blob_by_blob_in_s": round(blobs_in, 4), "blob_by_blob_out_s": round(blobs_out, 4),
           "state_mib": round(vector.nbytes / 2**20)}
    pinned = pinned_copy_seconds(vector.nbytes, repeat) if spec.gpu is not None else None
    if pinned is not None:
        row["pinned_copy_in_out_s"] = round(pinned, 4)
        row["state_in_out_vs_pinned_copy"] = round((state_in + state_out) / pinned, 3)
    return row


def pinned_copy_seconds(nbytes: int, repeat: int) -> float | None:
    """A plain copy of ``nbytes`` from pinned host memory to the device and back (median of
    ``repeat``; PyTorch's, where it is installed), the baseline of the state's trip."""
    try:
        import torch
    except ImportError:
        return None
    host = torch.empty(nbytes // 4, dtype=torch.float32, pin_memory=True)
    device = torch.empty_like(host, device="cuda")
    times = []
    for _ in range(repeat + 1):
        torch.cuda.synchronize()
        started = time.perf_counter()
        device.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        host.copy_(device, non_blocking=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def bench_score(deploy, test, x, batch, gpu, repeat):
    import caffe
    import pyarrow as pa
    from sparknet_ml.data.arrow import features_to_array, vectors_to_arrow
    from sparknet_ml.engine.scoring import ScoreSpec, cached_net, forward
    from sparknet_ml.tasks.scoring import softmax
    from sparknet_ml.net import net_to_text
    spec = ScoreSpec(net_to_text(deploy.net), batch, "data", (deploy.output_blob,), gpu,
                     transform=test)
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(spec.net_text)
        f.flush()
        raw_net = caffe.Net(f.name, caffe.TEST)
    weights = {name: [b.data.copy() for b in blobs] for name, blobs in raw_net.params.items()}
    scoring_net = cached_net(spec, "benchmark", weights, packed=True)
    column = pa.array([row.tobytes() for row in x], pa.binary())
    ready = test.apply(x)

    def raw():
        data = raw_net.blobs["data"].data
        for start in range(0, len(ready), batch):
            data[...] = ready[start:start + batch]
            raw_net.forward()

    def scoring():
        logits = forward(scoring_net, spec, features_to_array(column, SHAPE, pixels=True))[0]
        pa.RecordBatch.from_arrays([column, vectors_to_arrow(logits),
                                    vectors_to_arrow(softmax(logits)),
                                    pa.array(logits.argmax(axis=1).astype(np.float64))],
                                   names=["features", "rawPrediction", "probability",
                                          "prediction"])
    raw_s, scoring_s = interleaved([raw, scoring], repeat)
    return {"raw_rows_s": round(len(x) / raw_s, 1), "scoring_rows_s": round(len(x) / scoring_s, 1),
            "scoring_vs_raw": round(raw_s / scoring_s, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nets", nargs="+", default=list(NETS))
    parser.add_argument("--batches", nargs="+", type=int, help="default: 128 256 on a GPU")
    parser.add_argument("--taus", nargs="+", type=int, help="default: 10 50 on a GPU")
    parser.add_argument("--repeat", type=int, help="default: 5 on a GPU")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "imagenet-engine.json"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparknet_ml.engine.solver import set_device
    set_device(args.gpu)
    batches = args.batches or ((8,) if args.gpu is None else (128, 256))
    taus, repeat = ((2,), 2) if args.quick or args.gpu is None else ((10, 50), 5)
    taus, repeat = args.taus or taus, args.repeat or repeat
    rng = np.random.default_rng(1)
    results = []
    for net in args.nets:
        for batch in batches:
            x = rng.integers(0, 256, (4 * batch, *SHAPE)).astype(np.uint8)
            y = rng.integers(0, 1000, 4 * batch).astype(np.float32)
            spec, deploy, test = plan(net, batch, args.gpu)
            score = bench_score(deploy, test, x, batch, args.gpu, repeat)
            for tau in taus:
                row = {"net": net, "batch": batch, **bench_train(spec, x, y, tau, repeat),
                       **score}
                print(json.dumps(row), flush=True)
                results.append(row)
    write({"benchmark": "imagenet_engine", "device":
           "cpu" if args.gpu is None else f"gpu{args.gpu}",
           "parameters": {"repeats": repeat}, "rows": results}, args.out)


if __name__ == "__main__":
    main()
