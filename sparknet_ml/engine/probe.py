"""Build and run a net once in a child process before the driver or a task does: a Caffe
CHECK failure or a ``Not Implemented Yet`` aborts the process it happens in, and a user's
notebook (or every Python worker of a fit) must not be that process.

The child builds the net (or the solver) at the real batch size, then runs what the tasks
will run on a batch of at most :data:`RUN_BATCH` zero examples: a solver's step (forward,
backward, update) or a net's forward (and backward for a training net)."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile

RUN_BATCH = 2
"""Examples in the batch the child runs the net on (its build uses the real batch size)."""

_BUILT = "sparknet-probe: built"

_BUILD = """
import json, sys
import caffe
from sparknet_ml.engine.solver import make_solver, prototxt_file
spec = json.load(open(sys.argv[1]))

def small_zero_inputs(net):
    for top in spec["inputs"]:
        shape = list(net.blobs[top].data.shape)
        net.blobs[top].reshape(min(shape[0], spec["run_batch"]), *shape[1:])
        net.blobs[top].data[...] = 0

if spec["solver"] is None:
    with prototxt_file(spec["net"]) as path:
        net = caffe.Net(path, caffe.TRAIN if spec["train"] else caffe.TEST)
    shapes = {"blobs": {name: list(b.data.shape) for name, b in net.blobs.items()},
              "params": {name: [list(b.data.shape) for b in bs]
                         for name, bs in net.params.items()}}
    print(spec["built"], flush=True)
    if spec["run"]:
        small_zero_inputs(net)
        net.forward()
        if spec["train"]:
            net.backward()
    print(json.dumps(shapes))
else:
    solver = make_solver(spec["net"], spec["solver"], spec["batch"])
    print(spec["built"], flush=True)
    if spec["run"]:
        small_zero_inputs(solver.net)
        solver.step(1)
"""


def _input_tops(net_text: str) -> list[str]:
    """The tops of the net's Input layers (what a task feeds)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = text_format.Parse(net_text, caffe_pb2.NetParameter())
    return [top for layer in net.layer if layer.type == "Input" for top in layer.top]


def _build(net_text: str, solver_text: str | None, batch_size: int, train: bool, run: bool):
    """Build the solver (or, with ``solver_text`` None, the net) in a child Python, and with
    ``run`` run it once on a small batch of zeros."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"net": net_text, "solver": solver_text, "batch": batch_size,
                   "train": train, "run": run, "inputs": _input_tops(net_text),
                   "run_batch": RUN_BATCH, "built": _BUILT}, f)
        f.flush()
        return subprocess.run([sys.executable, "-c", _BUILD, f.name], capture_output=True,
                              text=True, env=dict(os.environ, GLOG_minloglevel="2"))


def _failing_layer(net_text: str, train: bool, run: bool) -> str | None:
    """The first layer whose set-up (or, with ``run``, whose run) fails, by trying ever longer
    prefixes of the net (a bisection: log2(layers) child processes; only after a failure), or
    None when the whole net passes (the solver failed)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = text_format.Parse(net_text, caffe_pb2.NetParameter())

    def builds(count: int) -> bool:
        prefix = caffe_pb2.NetParameter()
        prefix.CopyFrom(net)
        del prefix.layer[count:]
        return _build(text_format.MessageToString(prefix), None, 0, train,
                      run).returncode == 0

    if builds(len(net.layer)):
        return None
    low, high = 1, len(net.layer)  # the shortest failing prefix lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if builds(middle) else (low, middle)
    return net.layer[low - 1].name


def _failure(done, net_text: str, train: bool, run: bool) -> ValueError:
    """The error for a failed child: glog's fatal line (``Check failed: ...``, ``Not
    Implemented Yet``), the layer at fault and whether Caffe failed to build or to run it."""
    fatal = [line.split("] ", 1)[-1] for line in done.stderr.splitlines()
             if line.startswith("F") and "] " in line]
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    built = _BUILT in done.stdout.splitlines()
    layer = _failing_layer(net_text, train, built and run)
    where = f"layer {layer!r}: " if layer else ""
    verb = (f"run this net (a {'training step' if train else 'forward pass'} on "
            f"{RUN_BATCH} examples)" if built else "build this net")
    return ValueError(f"Caffe cannot {verb}: {where}{fatal[0] if fatal else last}")


def check_caffe_builds(net_text: str, solver_text: str, batch_size: int,
                       run: bool = True) -> None:
    """Raise ValueError carrying Caffe's own message, and the layer at fault, when it cannot
    build this solver or, with ``run``, take a step with it (on the CPU, with zeros for data,
    in a child Python). A net for the GPU is only built: some layers run on the GPU alone
    (stochastic pooling)."""
    done = _build(net_text, solver_text, batch_size, True, run)
    if done.returncode:
        raise _failure(done, net_text, True, run)


@functools.lru_cache(maxsize=8)
def _deploy_shapes(net_text: str, run: bool) -> dict:
    done = _build(net_text, None, 0, False, run)
    if done.returncode:
        raise _failure(done, net_text, False, run)
    return json.loads(done.stdout.strip().splitlines()[-1])


def deploy_blob_shapes(net_text: str, run: bool = True) -> dict[str, tuple[int, ...]]:
    """Build a deploy (TEST-phase) net in a child Python, with ``run`` run its forward pass on
    a small batch of zeros on the CPU, and return its blobs' shapes; once per net text in this
    process (a model scored again is not probed again).

    Raises
    ------
    ValueError
        With Caffe's message and the layer at fault, when Caffe cannot build or run it.
    """
    return {name: tuple(shape)
            for name, shape in _deploy_shapes(net_text, run)["blobs"].items()}


def deploy_param_shapes(net_text: str) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of every learnable blob of the deploy net, by layer, as Caffe sets it up
    (built and run as by :func:`deploy_blob_shapes`, which shares the child process)."""
    return {name: [tuple(s) for s in shapes]
            for name, shapes in _deploy_shapes(net_text, True)["params"].items()}
