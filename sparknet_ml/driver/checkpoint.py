"""Checkpoints of a fit in ``checkpointDir`` (any storage location): weights (caffemodel),
solver history (Caffe's SolverState), round and history (JSON). Each is written to a hidden
folder and renamed to ``round-NNNNNN`` once complete; older ones are deleted only after that.
The latest checkpoint is the highest-numbered round folder that holds all three files, so a
driver killed at any moment leaves the previous checkpoint or the new one, never half of one
(also where a folder rename copies file by file, as on S3)."""
from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np

from .. import storage
from ..engine.state import SolverState
from ..engine.worker import named_weights

_FILES = ("weights.caffemodel", "solverstate.binaryproto", "checkpoint.json")
MAX_CHECKPOINT_JSON_BYTES = 256 * 2 ** 20
"""Largest ``checkpoint.json`` read (it holds the fit's history, a row per round)."""
MAX_SOLVERSTATE_BYTES = 2 * 2 ** 30
"""Largest ``solverstate.binaryproto`` read (2 GiB, protobuf's own message limit)."""


def fit_signature(**inputs) -> str:
    """Digest of everything that makes a fit's rounds what they are (nets, solver, tau, seed,
    batch, partition sizes): a checkpoint resumes only a fit with the same signature."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _round_folders(directory: str) -> list[str]:
    """The ``round-NNNNNN`` folders in ``directory``, latest first."""
    names = storage.list_names(directory) if storage.is_dir(directory) else []
    return sorted((n for n in names if n.startswith("round-") and n[6:].isdigit()),
                  reverse=True)


def save_checkpoint(directory: str, round_number: int, state: SolverState, layout,
                    history: list[dict], signature: str, iteration: int) -> str:
    """Write the state after ``round_number`` rounds; return the checkpoint's folder."""
    from caffe.proto import caffe_pb2
    from ..persistence.caffemodel import caffemodel_bytes
    name = f"round-{round_number:06d}"
    staged = storage.join(directory, f".{name}-{uuid.uuid4().hex}")
    net = caffe_pb2.NetParameter(name="checkpoint")
    for layer, _ in layout:
        net.layer.add(name=layer)
    solver_state = caffe_pb2.SolverState(iter=iteration)
    for value in state.history:
        blob = solver_state.history.add()
        blob.shape.dim.extend(value.shape)
        blob.data.extend(np.asarray(value, np.float32).ravel().tolist())
    contents = (caffemodel_bytes(net, named_weights(state, layout)),
                solver_state.SerializeToString(),
                json.dumps({"round": round_number, "signature": signature,
                            "history": history}).encode())
    for file, data in zip(_FILES, contents):
        storage.write_bytes(storage.join(staged, file), data)
    final = storage.join(directory, name)
    storage.delete(final)
    storage.rename(staged, final)
    for entry in storage.list_names(directory):  # older checkpoints, leftovers of killed writes
        if entry.startswith(("round-", ".round-")) and entry != name:
            storage.delete(storage.join(directory, entry))
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
    found = storage.status(directory)
    if found is not None and not found.is_dir:
        raise ValueError(f"checkpointDir {directory} is a file, not a folder: checkpoints "
                         "could not be written; use another checkpointDir")
    complete = [name for name in _round_folders(directory)
                if all(storage.is_file(storage.join(directory, name, f)) for f in _FILES)]
    if not complete:
        return None
    folder = storage.join(directory, complete[0])
    meta = json.loads(storage.read_bytes(storage.join(folder, "checkpoint.json"),
                                         MAX_CHECKPOINT_JSON_BYTES, "MAX_CHECKPOINT_JSON_BYTES",
                                         inside=directory))
    if meta["signature"] != signature:
        raise ValueError(f"checkpointDir {directory} holds a checkpoint of a different fit "
                         "(other data, net, solver, tau, seed or batch size): use another "
                         "checkpointDir or remove it")
    if meta["round"] > rounds:
        raise ValueError(f"checkpointDir {directory} holds a checkpoint after round "
                         f"{meta['round']}, beyond this fit's maxIter={rounds}: raise maxIter "
                         "to at least that, or use another checkpointDir")
    named = read_caffemodel(storage.join(folder, "weights.caffemodel"), inside=directory)
    weights = [blob for layer, _ in layout for blob in named[layer]]
    solver_state = caffe_pb2.SolverState()
    solver_state.ParseFromString(storage.read_bytes(
        storage.join(folder, "solverstate.binaryproto"), MAX_SOLVERSTATE_BYTES,
        "MAX_SOLVERSTATE_BYTES", inside=directory))
    history = [np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim))
               for b in solver_state.history]
    return meta["round"], SolverState(weights, history), meta["history"]
