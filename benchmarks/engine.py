"""The worker engine against raw pycaffe on one device, in one run, no Spark (the GPU machine
has no Java): what Spark tasks run, fed the way Spark feeds them.

1. train: ``train_round`` (batch gather from a memory-mapped uint8 block opened by
   ``load_block``, input transform) as a barrier job of one task runs it, the state kept in
   the solver between rounds, vs raw ``solver.step`` with the batch already in the blobs;
   ``engine_vs_raw``; ``round_trip_vs_raw``: the same round with the state loaded from and
   read out to host arrays (a job per round, or a task that averages with others). On a GPU the engine runs as the estimator
   runs it there, with the block resident in the net (``TrainSpec.resident``), and
   ``host_fed_vs_raw`` gives the batch-by-batch feed for contrast and
   ``resident_step_vs_raw`` the resident net's bare ``solver.step`` (its feed without the
   round's state load, read-out and per-iteration loss); ``graph_gain_raw`` and
   ``graph_gain_engine``: raw and engine img/s over the same with Caffe's plain iterations
   (``*_no_graph_img_s``, ``caffe.set_cuda_graph(False)``), the CUDA-graph replay's gain.
2. score: an Arrow RecordBatch → ``features_to_array`` → transform → batched ``forward`` →
   logits/probability/prediction Arrow columns (``SparkNetModel``'s task, without Spark) vs a
   raw pycaffe forward loop over in-memory float32 batches; ``scoring_vs_raw``, plus the
   Arrow conversion cost per row.
3. rounds: the SparkNet round loop for 2 simulated workers sharing the device (two
   ``train_round`` calls + ``average_results`` per round) vs raw single-solver steps. They
   share one process and so one solver: they are fed from the host (a resident block would
   be uploaded again at every switch of worker).

    python benchmarks/engine.py [--gpu 0] [--quick] [--out FILE]
"""
import argparse
import dataclasses
import json
import os
import sys
import tempfile

import numpy as np

from _machine import interleaved, write

NETS = {"lenet": ("lenet_train_test", "lenet_solver", (1, 28, 28), 0.00390625),
        "cifar10_quick": ("cifar10_quick_train", "cifar10_quick_solver", (3, 32, 32), 1 / 255)}


def images_for(net, n):
    """Real Fashion-MNIST pixels as uint8 blocks shaped for the net, and labels."""
    from sparknet_ml.data import fashion_mnist
    images, labels = fashion_mnist.load("train")
    x = images[:n, None]
    if net == "cifar10_quick":
        x = np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    return np.ascontiguousarray(x), labels[:n].astype(np.float32)


def block_of(x, y, directory):
    """``x``, ``y`` saved as a training block and opened the way a round's task opens it
    (features memory-mapped)."""
    from sparknet_ml.tasks.blocks import BlockHandle, load_block
    handle = BlockHandle(0, os.path.join(directory, "features.npy"),
                         os.path.join(directory, "labels.npy"), len(y), "localhost")
    np.save(handle.features_path, x)
    np.save(handle.labels_path, y)
    return load_block(handle)


def train_specs(net, batch, gpu, resident=None):
    """The estimator's TrainSpec for ``net``: resident block on a GPU unless told otherwise."""
    from sparknet_ml import zoo
    from sparknet_ml.engine.transform import Transform
    from sparknet_ml.engine.worker import TrainSpec
    from sparknet_ml.net import net_to_text, parse_net, train_net
    name, solver, shape, scale = NETS[net]
    text = net_to_text(train_net(parse_net(zoo.prototxt(name)), shape, batch))
    return TrainSpec(text, zoo.prototxt(solver), batch, gpu=gpu, transform=Transform(scale),
                     resident=gpu is not None if resident is None else resident)


def raw_solver(spec, x, y):
    """Raw pycaffe: a plain solver for ``spec``'s net with its first batch of ``x``, ``y``
    (transformed) already in the input blobs."""
    from sparknet_ml.engine.solver import make_solver
    solver = make_solver(spec.net_text, spec.solver_text, spec.batch_size)
    spec.transform.apply(x[:spec.batch_size], out=solver.net.blobs["data"].data)
    solver.net.blobs["label"].data[...] = y[:spec.batch_size]
    return solver


def bench_train(net, batch, gpu, tau, rounds, directory):
    from sparknet_ml.engine.worker import average_results, cached_solver, get_state, train_round
    spec, host_fed = train_specs(net, batch, gpu), train_specs(net, batch, gpu, resident=False)
    x, y = images_for(net, 8192)
    block_x, block_y = block_of(x, y, directory)
    solver = raw_solver(spec, x, y)
    state = get_state(solver)
    halves = (block_x[:4096], block_y[:4096]), (block_x[4096:], block_y[4096:])

    def two_workers():
        results = []
        for i, (bx, by) in enumerate(halves):  # one solver for both: copy its state out
            result = train_round(host_fed, bx, by, state, 0, tau, 0, i)
            results.append(dataclasses.replace(result, state=result.state.copy()))
        average_results(results, state)
    calls = [lambda: solver.step(tau),
             lambda: train_round(spec, block_x, block_y, None, 0, tau, 0, 0, keep=True),
             two_workers, lambda: train_round(spec, block_x, block_y, state, 0, tau, 0, 0)]
    if spec.resident:  # the host-fed path, and the resident solver's bare step(tau)
        calls += [lambda: train_round(host_fed, block_x, block_y, state, 0, tau, 0, 0),
                  lambda: cached_solver(spec).step(tau)]
    if gpu is not None:  # raw and the engine again, in Caffe's plain iterations
        calls += [lambda: plain(lambda: solver.step(tau)), lambda: plain(
            lambda: train_round(spec, block_x, block_y, None, 0, tau, 0, 0, keep=True))]
    # Reading a blob Caffe last wrote on the device waits for the device: every timing
    # includes the work its call queued (not the loss blob, written on the host).
    first = next(iter(solver.net.params.values()))[0]
    seconds = interleaved(calls, rounds, wait=lambda: float(first.data.flat[0]))
    raw, engine, simulated = batch * tau / seconds[0], batch * tau / seconds[1], \
        2 * batch * tau / seconds[2]
    row = {"raw_img_s": round(raw, 1), "engine_img_s": round(engine, 1),
           "engine_vs_raw": round(engine / raw, 3), "resident": spec.resident,
           "round_trip_vs_raw": round(seconds[0] / seconds[3], 3),
           "two_workers_img_s": round(simulated, 1),
           "two_workers_vs_raw": round(simulated / raw, 3)}
    if spec.resident:
        row["host_fed_vs_raw"] = round(seconds[0] / seconds[4], 3)
        row["resident_step_vs_raw"] = round(seconds[0] / seconds[5], 3)
    if gpu is not None:
        row.update(raw_no_graph_img_s=round(batch * tau / seconds[-2], 1),
                   engine_no_graph_img_s=round(batch * tau / seconds[-1], 1),
                   graph_gain_raw=round(seconds[-2] / seconds[0], 3),
                   graph_gain_engine=round(seconds[-1] / seconds[1], 3))
    return row


def plain(call):
    """``call()`` with Caffe's plain iterations (no CUDA-graph replay)."""
    import caffe
    caffe.set_cuda_graph(False)
    try:
        return call()
    finally:
        caffe.set_cuda_graph(True)


def bench_score(net, batch, gpu, rows, repeat):
    import caffe
    import pyarrow as pa
    from sparknet_ml.data.arrow import features_to_array, vectors_to_arrow
    from sparknet_ml.engine.scoring import ScoreSpec, forward, load_weights
    from sparknet_ml.tasks.scoring import softmax
    from sparknet_ml.engine.solver import make_solver
    from sparknet_ml.engine.transform import Transform
    from sparknet_ml.net import deploy_net, net_to_text, parse_net
    from sparknet_ml import zoo
    name, _, shape, scale = NETS[net]
    deploy = deploy_net(parse_net(zoo.prototxt(name)), shape, batch)
    spec = ScoreSpec(net_to_text(deploy.net), batch, "data", (deploy.output_blob,), gpu)
    train = train_specs(net, batch, gpu)
    weights = {n: [b.data.copy() for b in blobs] for n, blobs in
               make_solver(train.net_text, train.solver_text, batch).net.params.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(spec.net_text)
        f.flush()
        scoring_net = caffe.Net(f.name, caffe.TEST)
        raw_net = caffe.Net(f.name, caffe.TEST)
    load_weights(scoring_net, weights)
    load_weights(raw_net, weights)
    x, _ = images_for(net, rows)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1).astype(np.float64)),
                                             int(np.prod(shape)))
    record_batch = pa.RecordBatch.from_arrays([flat.cast(pa.list_(pa.float64()))], ["features"])
    ready = Transform(scale).apply(x)

    def raw():
        data = raw_net.blobs["data"].data
        for start in range(0, rows, batch):
            data[...] = ready[start:start + batch]
            raw_net.forward()

    def arrow_in():
        return Transform(scale).apply(features_to_array(record_batch.column(0), shape))

    def scoring():
        logits = forward(scoring_net, spec, arrow_in())[0]
        pa.RecordBatch.from_arrays(
            record_batch.columns + [vectors_to_arrow(logits), vectors_to_arrow(softmax(logits)),
                                    pa.array(logits.argmax(axis=1).astype(np.float64))],
            names=["features", "rawPrediction", "probability", "prediction"])
    raw_seconds, scoring_seconds = interleaved([raw, scoring], repeat)
    raw_rows, scored_rows = rows / raw_seconds, rows / scoring_seconds
    arrow_us = interleaved([arrow_in], repeat)[0] / rows * 1e6
    return {"raw_rows_s": round(raw_rows, 1), "scoring_rows_s": round(scored_rows, 1),
            "scoring_vs_raw": round(scored_rows / raw_rows, 3),
            "arrow_in_us_per_row": round(arrow_us, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "engine.json"))
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparknet_ml.engine.solver import set_device
    set_device(args.gpu)
    # a CPU trains cifar10_quick at ~350 img/s: shorter windows there
    tau, rounds, rows, repeat = ((10, 2, 2048, 2) if args.quick else
                                 (50, 15, 8192, 9) if args.gpu is not None else (10, 5, 4096, 3))
    results = []
    for net in NETS:
        for batch in (64, 256):
            with tempfile.TemporaryDirectory() as directory:
                row = {"net": net, "batch": batch,
                       **bench_train(net, batch, args.gpu, tau, rounds, directory),
                       **bench_score(net, batch, args.gpu, rows, repeat)}
            print(json.dumps(row), flush=True)
            results.append(row)
    write({"benchmark": "engine", "device":
           "cpu" if args.gpu is None else f"gpu{args.gpu}",
           "parameters": {"tau": tau, "rounds_timed": rounds, "score_rows": rows,
                          "score_repeats": repeat, "blas_threads":
                          os.environ["OPENBLAS_NUM_THREADS"]}, "rows": results}, args.out)


if __name__ == "__main__":
    main()
