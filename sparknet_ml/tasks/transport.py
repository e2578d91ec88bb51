"""The one transport of states between SparkNet's processes: framing, authentication,
encryption, deadlines and size limits, used by the driver's state server
(:mod:`sparknet_ml.driver.exchange`, :mod:`.states`) and the in-job mesh (:mod:`.averaging`).

Framing: a message is an 8-byte little-endian length, a JSON header of that length, then the
float32 arrays the header's ``shapes`` lists, back to back. No pickle, nothing but JSON and
float32. The same bytes, joined, are the file format of shipped weights (:func:`encode`,
:func:`decode`).

Authentication: challenge and response. The side that accepts sends a fresh nonce; the side
that connects answers with its own nonce, who it is, and an HMAC-SHA256 over both nonces and
its identity under its key; the accepting side answers with its own HMAC, so each side knows
the other holds the key. The key itself never crosses the wire, and a recorded answer is
useless against the next nonce. The accepting side may hold a key per identity (the driver:
one per task, derived from the fit's key and the task's partition).

Encryption (when asked: Spark's own traffic is encrypted, or the user asks always): after the
handshake each direction is sealed with AES-256-GCM (the ``cryptography`` package) under a
key derived from the shared key and both nonces, in records of at most :data:`RECORD_BYTES`
with a counter nonce; a record that does not open (altered, replayed, reordered) ends the
connection. Each direction has its own key and counter, so one thread may send while another
receives.

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
_RECORD = struct.Struct("<I")
MAX_HEADER = 1 << 20
RECORD_BYTES = 1 << 20  # plaintext bytes in one sealed record
_TAG = 16               # AES-GCM's authentication tag
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


class Connection:
    """A socket of this transport and, once :meth:`seal` ed, one AEAD per direction.

    Parameters
    ----------
    sock : socket.socket
        A connected, blocking socket (every receive has its own deadline).
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._sealer = self._opener = None
        self._sent = self._opened = 0  # records sealed and opened: the nonces' counters
        self._plain = memoryview(b"")  # what is left of the last record opened

    def seal(self, send_key: bytes, receive_key: bytes) -> None:
        """Encrypt and authenticate everything from now on (AES-256-GCM, 32-byte keys)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._sealer, self._opener = AESGCM(send_key), AESGCM(receive_key)

    @property
    def sealed(self) -> bool:
        """Whether the connection is encrypted."""
        return self._sealer is not None

    def write(self, data) -> None:
        """Send ``data`` (bytes-like), sealed in records when the connection is."""
        if self._sealer is None:
            self.sock.sendall(data)
            return
        view = memoryview(data).cast("B")
        for at in range(0, len(view), RECORD_BYTES):
            nonce = self._sent.to_bytes(12, "little")
            self._sent += 1
            record = self._sealer.encrypt(nonce, view[at:at + RECORD_BYTES], None)
            self.sock.sendall(_RECORD.pack(len(record)) + record)

    def read_into(self, view: memoryview, deadline: float) -> None:
        """Fill ``view`` by ``deadline`` (``time.monotonic()``)."""
        if self._opener is None:
            _recv_exact(self.sock, view, deadline)
            return
        while len(view):
            if not len(self._plain):
                self._plain = memoryview(self._open_record(deadline))
            count = min(len(view), len(self._plain))
            view[:count] = self._plain[:count]
            view, self._plain = view[count:], self._plain[count:]

    def _open_record(self, deadline: float) -> bytes:
        length = bytearray(_RECORD.size)
        _recv_exact(self.sock, memoryview(length), deadline)
        (size,) = _RECORD.unpack(length)
        if not _TAG < size <= RECORD_BYTES + _TAG:
            raise PeerError(f"a sealed record of {size} bytes: not a SparkNet peer")
        record = bytearray(size)
        _recv_exact(self.sock, memoryview(record), deadline)
        from cryptography.exceptions import InvalidTag
        nonce = self._opened.to_bytes(12, "little")
        self._opened += 1
        try:
            return self._opener.decrypt(nonce, bytes(record), None)
        except InvalidTag:
            raise PeerError("a sealed record that does not open: altered or not from this "
                            "SparkNet fit") from None

    def wait(self, seconds: float | None) -> None:
        """Wait until a message has begun to arrive, at most ``seconds`` (None: as long as it
        takes)."""
        if not len(self._plain):
            _wait(self.sock, seconds)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send(conn: Connection, header: dict, arrays=()) -> None:
    """Send ``header`` (JSON) and ``arrays`` (raw float32) as one message."""
    header = {**header, "shapes": [list(a.shape) for a in arrays]}
    text = json.dumps(header).encode()
    conn.write(_LENGTH.pack(len(text)) + text)
    for array in arrays:
        conn.write(memoryview(np.ascontiguousarray(array, np.float32)).cast("B"))


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


def receive(conn: Connection, limit: int = 0, timeout: float = MESSAGE_TIMEOUT,
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
        A header over :data:`MAX_HEADER`, not JSON, arrays over ``limit``, not the one
        array ``into`` takes, or a sealed record that does not open.
    TimeoutError, ConnectionError
    """
    conn.wait(timeout if wait is not None and wait < 0 else wait)
    deadline = time.monotonic() + timeout
    length = bytearray(_LENGTH.size)
    conn.read_into(memoryview(length), deadline)
    (size,) = _LENGTH.unpack(length)
    if size > MAX_HEADER:
        raise PeerError(f"a {size}-byte message header: not a SparkNet peer")
    text = bytearray(size)
    conn.read_into(memoryview(text), deadline)
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
        conn.read_into(memoryview(array).cast("B"), deadline)
        arrays.append(array)
    return header, arrays


def _session_keys(key: str, accepted: str, connected: str) -> tuple[bytes, bytes]:
    """The sealing keys (accepting side to connecting side, and back) of one connection."""
    return tuple(hmac.new(key.encode(), "\0".join(("seal", way, accepted, connected)).encode(),
                          hashlib.sha256).digest() for way in ("accept", "connect"))


def connect(address: tuple[str, int], key: str, identity: dict,
            timeout: float = CONNECT_TIMEOUT, encrypt: bool = False) -> Connection:
    """Open an authenticated connection to ``address`` as ``identity`` (JSON values), sealed
    when ``encrypt`` (the other side must ask the same).

    Raises
    ------
    PeerError
        When the other side does not prove it holds ``key``.
    """
    sock = socket.create_connection(address, timeout=timeout)
    conn = Connection(sock)
    try:
        sock.settimeout(None)  # blocking; every receive has its own deadline
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        challenge, _ = receive(conn, timeout=HELLO_TIMEOUT)
        theirs, mine = str(challenge.get("nonce")), secrets.token_hex(16)
        said = json.dumps(identity, sort_keys=True)
        send(conn, {"nonce": mine, "identity": identity,
                    "mac": _mac(key, "connect", theirs, mine, said)})
        answer, _ = receive(conn, timeout=HELLO_TIMEOUT)
        if not hmac.compare_digest(str(answer.get("mac")), _mac(key, "accept", mine, theirs)):
            raise PeerError(f"{address[0]}:{address[1]} is not this SparkNet fit's peer")
        if encrypt:
            incoming, outgoing = _session_keys(key, theirs, mine)
            conn.seal(outgoing, incoming)
        return conn
    except BaseException:
        conn.close()
        raise


def admit(sock: socket.socket, key_for, timeout: float = HELLO_TIMEOUT,
          encrypt: bool = False) -> tuple[Connection, dict]:
    """Authenticate a connection that was accepted, sealed when ``encrypt``.

    Parameters
    ----------
    sock : socket.socket
        The accepted socket.
    key_for : callable
        ``key_for(identity) -> str``: the key the peer that says it is ``identity`` must
        hold (None: no such peer).
    timeout : float
        Seconds the peer has to prove it.

    Returns
    -------
    conn : Connection
    identity : dict
        Who the peer proved it is.

    Raises
    ------
    PeerError, TimeoutError, ConnectionError
        When it does not prove it holds its key within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    sock.settimeout(None)  # blocking; every receive has its own deadline
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(sock)
    mine = secrets.token_hex(16)
    send(conn, {"nonce": mine})
    hello, _ = receive(conn, timeout=max(deadline - time.monotonic(), 0.001))
    identity, theirs = hello.get("identity"), str(hello.get("nonce"))
    key = key_for(identity) if isinstance(identity, dict) else None
    said = json.dumps(identity, sort_keys=True)
    if key is None or not hmac.compare_digest(str(hello.get("mac")),
                                              _mac(key, "connect", mine, theirs, said)):
        raise PeerError("a connection without this fit's key")
    send(conn, {"mac": _mac(key, "accept", theirs, mine)})
    if encrypt:
        conn.seal(*_session_keys(key, mine, theirs))
    return conn, identity


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
