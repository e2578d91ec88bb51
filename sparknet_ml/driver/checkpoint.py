"""Checkpoints of a fit in ``checkpointDir`` (any storage location): weights (caffemodel),
solver history (Caffe's SolverState), round and history (JSON). Each is written to a hidden
folder and renamed to ``round-NNNNNN`` once complete; older ones are deleted only after that.
A fit resumes from the highest-numbered round folder that holds all three files, so a driver
killed at any moment leaves the previous checkpoint or the new one, never half of one (also
where a folder rename copies file by file, as on S3); there is no other record of the latest
one to go stale. A checkpoint damaged afterwards (a file that no longer parses) is passed over
with a warning for the previous intact one; when none is intact the fit is refused, the folder
named (see :func:`load_checkpoint`)."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid

import numpy as np

from .. import storage
from ..engine.state import SolverState
from ..engine.worker import named_weights

log = logging.getLogger("sparknet_ml")

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
    """Return (round, state, history) of the latest intact checkpoint in ``directory``, or
    None when it holds none.

    A damaged checkpoint (a file whose content is not what :func:`save_checkpoint` wrote) is
    passed over with a warning naming the file and why, and the previous intact one is
    resumed: a round being a pure function of its inputs, the fit ends with the same weights.
    When every checkpoint is damaged the fit is refused rather than started over: the folder
    is left as it is for the user to look at and remove.

    Raises
    ------
    ValueError
        Before round 1, naming the folder: ``directory`` is a file, the checkpoint belongs to a
        different fit (another signature), it is of a later round than the fit's ``rounds``
        (a longer fit's), or every checkpoint there is damaged (each file at fault named).
    sparknet_ml.storage.StorageError
        When a checkpoint's file cannot be read (it is then not taken for damaged).
    """
    found = storage.status(directory)
    if found is not None and not found.is_dir:
        raise ValueError(f"checkpointDir {directory} is a file, not a folder: checkpoints "
                         "could not be written; use another checkpointDir")
    complete = [name for name in _round_folders(directory)
                if all(storage.is_file(storage.join(directory, name, f)) for f in _FILES)]
    damaged = []
    for name in complete:
        try:
            return _read_checkpoint(directory, name, signature, layout, rounds)
        except _Damaged as err:
            log.warning("passing over a damaged checkpoint: %s", err)
            damaged.append(str(err))
    if damaged:
        raise ValueError(f"checkpointDir {directory} holds no intact checkpoint "
                         f"({'; '.join(damaged)}): remove it to start the fit over, or use "
                         "another checkpointDir")
    return None


class _Damaged(ValueError):
    """A checkpoint's file holds something other than what :func:`save_checkpoint` wrote."""


def _read_checkpoint(directory: str, name: str, signature: str, layout, rounds: int):
    """(round, state, history) of the checkpoint in folder ``name`` of ``directory``, checked
    against the fit (see :func:`load_checkpoint`).

    Raises
    ------
    _Damaged
        Naming the file at fault and why.
    """
    from ..persistence.caffemodel import MAX_CAFFEMODEL_BYTES
    folder = storage.join(directory, name)

    def parsed(file: str, cap: int, cap_name: str, parse):
        path = storage.join(folder, file)
        data = storage.read_bytes(path, cap, cap_name, inside=directory)
        try:
            return parse(data)
        except ValueError as err:
            raise _Damaged(f"{path} is damaged ({err})") from None

    meta = parsed("checkpoint.json", MAX_CHECKPOINT_JSON_BYTES, "MAX_CHECKPOINT_JSON_BYTES",
                  _parse_meta)
    if meta["signature"] != signature:
        raise ValueError(f"checkpointDir {directory} holds a checkpoint of a different fit "
                         "(other data, net, solver, tau, seed or batch size): use another "
                         "checkpointDir or remove it")
    if meta["round"] > rounds:
        raise ValueError(f"checkpointDir {directory} holds a checkpoint after round "
                         f"{meta['round']}, beyond this fit's maxIter={rounds}: raise maxIter "
                         "to at least that, or use another checkpointDir")
    weights = parsed("weights.caffemodel", MAX_CAFFEMODEL_BYTES, "MAX_CAFFEMODEL_BYTES",
                     lambda data: _parse_weights(data, layout))
    history = parsed("solverstate.binaryproto", MAX_SOLVERSTATE_BYTES,
                     "MAX_SOLVERSTATE_BYTES", _parse_history)
    return meta["round"], SolverState(weights, history), meta["history"]


def _parse_meta(data: bytes) -> dict:
    try:
        meta = json.loads(data)
    except ValueError as err:  # UnicodeDecodeError included
        raise ValueError(f"not JSON: {err}") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("round"), int)
            and isinstance(meta.get("signature"), str) and isinstance(meta.get("history"), list)
            and all(isinstance(row, dict) for row in meta["history"])):
        raise ValueError("not a checkpoint's JSON: an object of round, signature and history")
    return meta


def _parse_weights(data: bytes, layout) -> list[np.ndarray]:
    from ..persistence.caffemodel import parse_caffemodel
    named = parse_caffemodel(data)
    for layer, count in layout:
        if len(named.get(layer, ())) != count:
            raise ValueError(f"layer {layer!r} has {len(named.get(layer, ()))} blobs, the net "
                             f"{count}")
    return [blob for layer, _ in layout for blob in named[layer]]


def _parse_history(data: bytes) -> list[np.ndarray]:
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError
    solver_state = caffe_pb2.SolverState()
    try:
        solver_state.ParseFromString(data)
    except DecodeError as err:
        raise ValueError(f"not a SolverState (truncated or corrupt): {err}") from None
    return [np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim))
            for b in solver_state.history]
