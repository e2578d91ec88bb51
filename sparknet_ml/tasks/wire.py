"""The one wire format of states between processes: no pickle, nothing but JSON and float32.

A message is an 8-byte little-endian length, a JSON header of that length, then the float32
arrays the header's ``shapes`` list, back to back. It travels over sockets (the in-job
averaging, the driver's state server) and, cut into pieces, as binary cells of the Arrow rows
that tasks return (:func:`encode`, :func:`decode`).
"""
from __future__ import annotations

import json
import socket
import struct

import numpy as np

_LENGTH = struct.Struct("<Q")
_MAX_HEADER = 1 << 20
PIECE_BYTES = 4 * 2 ** 20  # a binary cell of a returned row: within Spark Connect's batches


def send_message(sock: socket.socket, header: dict, arrays=()) -> None:
    """Send ``header`` (JSON) and ``arrays`` (raw float32) in the wire format above."""
    header = {**header, "shapes": [list(a.shape) for a in arrays]}
    text = json.dumps(header).encode()
    sock.sendall(_LENGTH.pack(len(text)) + text)
    for array in arrays:
        sock.sendall(memoryview(np.ascontiguousarray(array, np.float32)).cast("B"))


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    while len(view):
        got = sock.recv_into(view)
        if not got:
            raise ConnectionError("a peer of this SparkNet job closed its connection")
        view = view[got:]


def recv_message(sock: socket.socket,
                 arrays_allowed: bool = True) -> tuple[dict, list[np.ndarray]]:
    """Receive one message; ``arrays_allowed=False`` refuses arrays (before the secret)."""
    length = bytearray(_LENGTH.size)
    _recv_exact(sock, memoryview(length))
    (size,) = _LENGTH.unpack(length)
    if size > _MAX_HEADER:
        raise ConnectionError(f"a {size}-byte message header: not a SparkNet peer")
    text = bytearray(size)
    _recv_exact(sock, memoryview(text))
    header = json.loads(text)
    shapes = header.pop("shapes")
    if shapes and not arrays_allowed:
        raise ConnectionError("arrays before the job's secret: not a SparkNet peer")
    arrays = []
    for shape in shapes:
        array = np.empty(shape, np.float32)
        _recv_exact(sock, memoryview(array).cast("B"))
        arrays.append(array)
    return header, arrays


def encode(header: dict, arrays=()) -> list[bytes]:
    """One message as pieces of at most :data:`PIECE_BYTES` (their concatenation is the
    message)."""
    header = {**header, "shapes": [list(a.shape) for a in arrays]}
    text = json.dumps(header).encode()
    message = b"".join([_LENGTH.pack(len(text)), text,
                        *(np.ascontiguousarray(a, np.float32).tobytes() for a in arrays)])
    return [message[at:at + PIECE_BYTES] for at in range(0, len(message), PIECE_BYTES)]


def decode(message: bytes) -> tuple[dict, list[np.ndarray]]:
    """The header and arrays of one message (the pieces of :func:`encode`, joined).

    Raises
    ------
    ValueError
        When the bytes are not one whole message.
    """
    view = memoryview(message)
    if len(view) < _LENGTH.size:
        raise ValueError("a truncated SparkNet message")
    (size,) = _LENGTH.unpack(view[:_LENGTH.size])
    at = _LENGTH.size + size
    header = json.loads(bytes(view[_LENGTH.size:at]))
    arrays = []
    for shape in header.pop("shapes"):
        count = int(np.prod(shape, dtype=np.int64))
        arrays.append(np.frombuffer(view[at:at + 4 * count], np.float32).reshape(shape).copy())
        at += 4 * count
    if at != len(view):
        raise ValueError("a SparkNet message of the wrong length")
    return header, arrays
