"""Checkpoints of a fit: weights (caffemodel), solver history (Caffe's SolverState), round and
history (JSON), written to a temporary folder and renamed into place, so a driver killed at any
moment leaves either the previous checkpoint or the new one, never half of one."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid

import numpy as np

from ..engine.worker import SolverState, named_weights

_LATEST = "latest.json"


def fit_signature(**inputs) -> str:
    """Digest of everything that makes a fit's rounds what they are (nets, solver, tau, seed,
    batch, partition sizes): a checkpoint resumes only a fit with the same signature."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _write_atomically(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def save_checkpoint(directory: str, round_number: int, state: SolverState, layout,
                    history: list[dict], signature: str, iteration: int) -> str:
    """Write the state after ``round_number`` rounds; return the checkpoint's folder."""
    from caffe.proto import caffe_pb2
    from ..persistence.caffemodel import caffemodel_bytes
    os.makedirs(directory, exist_ok=True)
    name = f"round-{round_number:06d}"
    tmp = os.path.join(directory, f".{name}-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    net = caffe_pb2.NetParameter(name="checkpoint")
    for layer, _ in layout:
        net.layer.add(name=layer)
    with open(os.path.join(tmp, "weights.caffemodel"), "wb") as f:
        f.write(caffemodel_bytes(net, named_weights(state, layout)))
    solver_state = caffe_pb2.SolverState(iter=iteration)
    for value in state.history:
        blob = solver_state.history.add()
        blob.shape.dim.extend(value.shape)
        blob.data.extend(np.asarray(value, np.float32).ravel().tolist())
    with open(os.path.join(tmp, "solverstate.binaryproto"), "wb") as f:
        f.write(solver_state.SerializeToString())
    with open(os.path.join(tmp, "checkpoint.json"), "w") as f:
        json.dump({"round": round_number, "signature": signature, "history": history}, f)
    final = os.path.join(directory, name)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomically(os.path.join(directory, _LATEST), json.dumps({"checkpoint": name}).encode())
    for entry in os.listdir(directory):  # older checkpoints and leftovers of killed writes
        if entry.startswith(("round-", ".round-")) and entry != name:
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    return final


def load_checkpoint(directory: str, signature: str, layout, rounds: int):
    """Return (round, state, history) of the latest checkpoint in ``directory``, or None.

    Raises
    ------
    ValueError
        Before round 1, naming the folder: ``directory`` is a file, the checkpoint belongs to a
        different fit (another signature), or it is of a later round than the fit's
        ``rounds`` (a longer fit's).
    """
    from caffe.proto import caffe_pb2
    from ..persistence.caffemodel import read_caffemodel
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"checkpointDir {directory} is a file, not a folder: checkpoints "
                         "could not be written; use another checkpointDir")
    latest = os.path.join(directory, _LATEST)
    if not os.path.exists(latest):
        return None
    with open(latest) as f:
        name = json.load(f)["checkpoint"]
    folder = os.path.realpath(os.path.join(directory, name))
    if os.path.dirname(folder) != os.path.realpath(directory):
        raise ValueError(f"{latest} points outside {directory}")
    with open(os.path.join(folder, "checkpoint.json")) as f:
        meta = json.load(f)
    if meta["signature"] != signature:
        raise ValueError(f"checkpointDir {directory} holds a checkpoint of a different fit "
                         "(other data, net, solver, tau, seed or batch size): use another "
                         "checkpointDir or remove it")
    if meta["round"] > rounds:
        raise ValueError(f"checkpointDir {directory} holds a checkpoint after round "
                         f"{meta['round']}, beyond this fit's maxIter={rounds}: raise maxIter "
                         "to at least that, or use another checkpointDir")
    named = read_caffemodel(os.path.join(folder, "weights.caffemodel"))
    weights = [blob for layer, _ in layout for blob in named[layer]]
    solver_state = caffe_pb2.SolverState()
    with open(os.path.join(folder, "solverstate.binaryproto"), "rb") as f:
        solver_state.ParseFromString(f.read())
    history = [np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim))
               for b in solver_state.history]
    return meta["round"], SolverState(weights, history), meta["history"]
