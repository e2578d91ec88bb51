"""The one transport of states between SparkNet's processes: framing, authentication,
deadlines and size limits, used by the driver's state server
(:mod:`sparknet_ml.driver.exchange`, :mod:`.states`) and the in-job mesh (:mod:`.averaging`).

Framing: a message is an 8-byte little-endian length, a JSON header of that length, then the
float32 arrays the header's ``shapes`` lists, back to back. No pickle, nothing but JSON and
float32. The same bytes, joined, are the file format of shipped weights (:func:`encode`,
:func:`decode`).

Authentication: challenge and response. The side that accepts sends a fresh nonce; the side
that connects answers with its own nonce, who it is, and an HMAC-SHA256 over both nonces and
its identity under the shared key; the accepting side answers with its own HMAC, so each
side knows the other holds the key. The key itself never crosses the wire, and a recorded
answer is useless against the next nonce.

Deadlines: every receive has one (a peer that sends a byte at a time cannot hold a
connection past it). Size limits: a header is at most :data:`MAX_HEADER` bytes, and the
arrays of a message at most the ``limit`` its receiver states (the state it expects) before
anything is allocated.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import select
import socket
import struct
import time

import numpy as np

_LENGTH = struct.Struct("<Q")
MAX_HEADER = 1 << 20
HELLO_TIMEOUT = 10.0     # seconds a new connection has to authenticate
CONNECT_TIMEOUT = 300.0  # seconds to reach a peer, or for a barrier's peers to arrive
# Seconds a peer may take to send one message once it began: a state of GiBs over a slow link.
MESSAGE_TIMEOUT = 600.0


class PeerError(ConnectionError):
    """A peer that is not one of this fit's processes, or broke the protocol."""


def new_key() -> str:
    """A fresh random key for one fit (hex)."""
    return secrets.token_hex(32)


def derive_key(key: str, purpose: str) -> str:
    """A key for ``purpose`` (one barrier job's mesh) derived from the fit's ``key``."""
    return hmac.new(key.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def _mac(key: str, *parts: str) -> str:
    return hmac.new(key.encode(), "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def _array_bytes(shapes) -> int:
    return sum(4 * int(np.prod(shape, dtype=np.int64)) for shape in shapes)


def send(sock: socket.socket, header: dict, arrays=()) -> None:
    """Send ``header`` (JSON) and ``arrays`` (raw float32) as one message."""
    header = {**header, "shapes": [list(a.shape) for a in arrays]}
    text = json.dumps(header).encode()
    sock.sendall(_LENGTH.pack(len(text)) + text)
    for array in arrays:
        sock.sendall(memoryview(np.ascontiguousarray(array, np.float32)).cast("B"))


def _wait(sock: socket.socket, seconds: float | None) -> None:
    """Wait until ``sock`` has bytes (or its end) to read, at most ``seconds`` (None: as long
    as it takes). Polls, never changes the socket's blocking mode: another thread may be
    sending on it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(None if seconds is None else max(int(seconds * 1000), 0)):
        raise TimeoutError("a SparkNet peer did not send its message in time")


def _recv_exact(sock: socket.socket, view: memoryview, deadline: float) -> None:
    while len(view):
        _wait(sock, deadline - time.monotonic())
        got = sock.recv_into(view)
        if not got:
            raise ConnectionError("a peer of this SparkNet fit closed its connection")
        view = view[got:]


def receive(sock: socket.socket, limit: int = 0, timeout: float = MESSAGE_TIMEOUT,
            wait: float | None = -1.0,
            into: np.ndarray | None = None) -> tuple[dict, list[np.ndarray]]:
    """Receive one message.

    Parameters
    ----------
    limit : int
        Most bytes of arrays accepted (0: none); checked before anything is allocated.
    into : ndarray, optional
        A float32 vector the message's one array, of its size, is received into, in place
        (a pinned host buffer: no copy after the socket's).
    timeout : float
        Seconds the message may take once it began.
    wait : float or None
        Seconds to wait for it to begin: ``timeout`` when negative, as long as it takes when
        None (a peer still computing its round; a peer that dies closes the connection).

    Raises
    ------
    PeerError
        A header over :data:`MAX_HEADER`, not JSON, arrays over ``limit``, or not the one
        array ``into`` takes.
    TimeoutError, ConnectionError
    """
    length = bytearray(_LENGTH.size)
    _wait(sock, timeout if wait is not None and wait < 0 else wait)
    got = sock.recv_into(length)
    if not got:
        raise ConnectionError("a peer of this SparkNet fit closed its connection")
    deadline = time.monotonic() + timeout
    _recv_exact(sock, memoryview(length)[got:], deadline)
    (size,) = _LENGTH.unpack(length)
    if size > MAX_HEADER:
        raise PeerError(f"a {size}-byte message header: not a SparkNet peer")
    text = bytearray(size)
    _recv_exact(sock, memoryview(text), deadline)
    try:
        header = json.loads(text)
        shapes = header.pop("shapes")
        nbytes = _array_bytes(shapes)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PeerError("a message that is not SparkNet's") from None
    if nbytes > limit:
        raise PeerError(f"a message of {nbytes} bytes of arrays where at most {limit} "
                        "were expected")
    if into is not None and (len(shapes) != 1 or into.nbytes != nbytes):
        raise PeerError(f"a message of {nbytes} bytes of arrays where one array of "
                        f"{into.nbytes} was expected")
    arrays = []
    for shape in shapes:
        array = np.empty(shape, np.float32) if into is None else into.reshape(shape)
        _recv_exact(sock, memoryview(array).cast("B"), deadline)
        arrays.append(array)
    return header, arrays


def connect(address: tuple[str, int], key: str, identity: dict,
            timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Open an authenticated connection to ``address`` as ``identity`` (JSON values).

    Raises
    ------
    PeerError
        When the other side does not prove it holds ``key``.
    """
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.settimeout(None)  # blocking; every receive has its own deadline
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        challenge, _ = receive(sock, timeout=HELLO_TIMEOUT)
        mine = secrets.token_hex(16)
        said = json.dumps(identity, sort_keys=True)
        send(sock, {"nonce": mine, "identity": identity,
                    "mac": _mac(key, "connect", str(challenge.get("nonce")), mine, said)})
        answer, _ = receive(sock, timeout=HELLO_TIMEOUT)
        if not hmac.compare_digest(str(answer.get("mac")),
                                   _mac(key, "accept", mine, str(challenge.get("nonce")))):
            raise PeerError(f"{address[0]}:{address[1]} is not this SparkNet fit's peer")
        return sock
    except BaseException:
        sock.close()
        raise


def admit(sock: socket.socket, key: str, timeout: float = HELLO_TIMEOUT) -> dict:
    """Authenticate a connection that was accepted; returns who it says it is.

    Raises
    ------
    PeerError, TimeoutError, ConnectionError
        When it does not prove it holds ``key`` within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    sock.settimeout(None)  # blocking; every receive has its own deadline
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    nonce = secrets.token_hex(16)
    send(sock, {"nonce": nonce})
    hello, _ = receive(sock, timeout=max(deadline - time.monotonic(), 0.001))
    identity, theirs = hello.get("identity"), str(hello.get("nonce"))
    said = json.dumps(identity, sort_keys=True)
    if not (isinstance(identity, dict) and hmac.compare_digest(
            str(hello.get("mac")), _mac(key, "connect", nonce, theirs, said))):
        raise PeerError("a connection without this fit's key")
    send(sock, {"mac": _mac(key, "accept", theirs, nonce)})
    return identity


def encode(header: dict, arrays=()) -> bytes:
    """One message as bytes (a shipped weights file)."""
    header = {**header, "shapes": [list(a.shape) for a in arrays]}
    text = json.dumps(header).encode()
    return b"".join([_LENGTH.pack(len(text)), text,
                     *(np.ascontiguousarray(a, np.float32).tobytes() for a in arrays)])


def decode(message: bytes) -> tuple[dict, list[np.ndarray]]:
    """The header and arrays of one message (:func:`encode`'s bytes).

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
