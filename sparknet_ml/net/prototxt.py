"""Safe parsing of Caffe prototxt text: protobuf ``text_format`` only, nothing executed.

>>> net = parse_net('name: "tiny" layer { name: "data" type: "Input" top: "data" }')
>>> net.layer[0].type
'Input'
>>> net_to_text(net).splitlines()[0]
'name: "tiny"'
"""
from __future__ import annotations

import os

from caffe.proto import caffe_pb2
from google.protobuf import text_format
from google.protobuf.message import Message

from .. import storage


class NetSpecError(ValueError):
    """A net or solver specification that sparknet_ml cannot use; the message names the culprit."""


MAX_PROTOTXT_BYTES = 16 * 2 ** 20
"""Largest net or solver prototxt parsed (16 MiB): text_format's parse time and memory grow
with the text, so larger inputs are refused before parsing."""


def looks_like_path(value) -> bool:
    """Whether a string could be a file path rather than prototxt text (prototxt of any use
    has a newline or a ``{``)."""
    return isinstance(value, str) and "\n" not in value and "{" not in value


def _check_size(size: int, kind: str, source: str) -> None:
    """Raise when a prototxt of ``size`` bytes is over :data:`MAX_PROTOTXT_BYTES`."""
    if size > MAX_PROTOTXT_BYTES:
        raise NetSpecError(f"{kind} {source}: {size} bytes of prototxt, over the "
                           f"{MAX_PROTOTXT_BYTES} bytes cap (MAX_PROTOTXT_BYTES)")


def read_prototxt_file(path) -> str:
    """The text of the prototxt file ``path`` (a path or any storage location).

    Raises
    ------
    ValueError
        Naming ``path``: unreadable, over :data:`MAX_PROTOTXT_BYTES`, or binary (a
        ``.caffemodel`` or ``.binaryproto``, not prototxt text).
    """
    path = os.fspath(path)
    data = storage.read_bytes(path, MAX_PROTOTXT_BYTES, "MAX_PROTOTXT_BYTES")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NetSpecError(f"{path} is binary, not prototxt text (a .caffemodel or "
                           ".binaryproto?): give the net's .prototxt here, and a caffemodel's "
                           "weights as initialWeights") from None


def names_a_file(value) -> bool:
    """Whether ``value`` is a path (or location) of an existing prototxt file rather than
    prototxt text."""
    return isinstance(value, os.PathLike) or (looks_like_path(value) and storage.is_file(value))


def _parse(value, message_type: type[Message]) -> Message:
    """Parse ``value`` (text, path or message) into a new ``message_type``."""
    kind = message_type.DESCRIPTOR.name
    if isinstance(value, message_type):
        copy = message_type()
        copy.CopyFrom(value)
        return copy
    if names_a_file(value):
        return _parse_text(read_prototxt_file(value), message_type,
                           source=repr(os.fspath(value)))
    if not isinstance(value, str):
        raise TypeError(
            f"{kind}: expected prototxt text, a path or a {kind}, got {type(value).__name__}")
    _check_size(len(value.encode()), kind, "text")
    try:
        return _parse_text(value, message_type, source="text")
    except NetSpecError as e:
        if looks_like_path(value) and value.strip():
            raise NetSpecError(f"{kind}: {value!r} is neither an existing file nor valid prototxt text "
                               f"({e})") from None
        raise


def _parse_text(text: str, message_type: type[Message], source: str) -> Message:
    """Parse prototxt ``text``; a ParseError becomes a NetSpecError with line and column."""
    try:
        return text_format.Parse(text, message_type())
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        detail = str(e).removeprefix(f"{line}:{column} : ")
        raise NetSpecError(f"{message_type.DESCRIPTOR.name} {source}: line {line} column {column}: "
                           f"{detail}") from None


def parse_net(value) -> caffe_pb2.NetParameter:
    """Parse a Caffe net.

    Parameters
    ----------
    value : str, os.PathLike or caffe_pb2.NetParameter
        Prototxt text, the path of a prototxt file (a str containing a newline or ``{`` is
        always text), or a NetParameter, which is copied.

    Returns
    -------
    caffe_pb2.NetParameter
        A new message, never ``value`` itself.

    Raises
    ------
    NetSpecError
        On a syntax error (with line and column), a missing file, text or a file over
        :data:`MAX_PROTOTXT_BYTES`, or a net in the V1 ``layers`` format.
    """
    net = _parse(value, caffe_pb2.NetParameter)
    if net.layers:
        raise NetSpecError(
            f"net {net.name!r} uses the deprecated V1 'layers' field (first: {net.layers[0].name!r}); "
            "upgrade it to 'layer' with Caffe's tools/upgrade_net_proto_text")
    return net


def parse_solver(value) -> caffe_pb2.SolverParameter:
    """Parse a Caffe solver; ``value`` follows the rules of :func:`parse_net`.

    Returns
    -------
    caffe_pb2.SolverParameter
        A new message.
    """
    return _parse(value, caffe_pb2.SolverParameter)


SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_solver(solver: caffe_pb2.SolverParameter, iterations: int | None = None) -> None:
    """Refuse, on the driver, what Caffe's solver would abort the worker process on, or
    silently train wrong with: an unknown ``type`` or ``lr_policy`` (Caffe has no default
    policy), a policy without the field it divides by or reads, a ``regularization_type``
    other than L1/L2, ``iter_size`` < 1, a negative ``weight_decay``, ``momentum`` or
    ``momentum2`` outside [0, 1), a ``clip_gradients`` below 0 other than -1 (off), and a
    ``poly`` schedule whose ``max_iter`` ends before the fit's ``iterations`` (the learning rate
    would turn negative or NaN).

    Raises
    ------
    NetSpecError
        Naming the solver field at fault.
    """
    if solver.type not in SOLVER_TYPES:
        raise NetSpecError(f"solver type {solver.type!r} is not one of "
                           f"{', '.join(SOLVER_TYPES)}")
    policy = solver.lr_policy
    if policy not in LR_POLICIES:
        raise NetSpecError(f"solver lr_policy {policy!r} is not one of "
                           f"{', '.join(LR_POLICIES)}" + (" (Caffe has no default: set e.g. "
                                                          "lr_policy: \"fixed\")"
                                                          if not policy else ""))
    needs = {"step": ("stepsize", solver.stepsize > 0),
             "sigmoid": ("stepsize", solver.stepsize > 0),
             "multistep": ("stepvalue", len(solver.stepvalue) > 0),
             "poly": ("max_iter", solver.max_iter > 0)}
    if policy in needs and not needs[policy][1]:
        raise NetSpecError(f"solver lr_policy {policy!r} needs a positive {needs[policy][0]}")
    if policy == "poly" and iterations is not None and solver.max_iter < iterations:
        raise NetSpecError(f"solver max_iter {solver.max_iter} ends before the fit's "
                           f"{iterations} iterations (maxIter x syncInterval): lr_policy 'poly' "
                           "would drive the learning rate below 0; raise max_iter to at least "
                           f"{iterations}")
    if solver.regularization_type not in ("L1", "L2"):
        raise NetSpecError(f"solver regularization_type {solver.regularization_type!r} is not "
                           "L1 or L2")
    checks = (("iter_size", solver.iter_size >= 1, "at least 1"),
              ("weight_decay", solver.weight_decay >= 0, "at least 0"),
              ("momentum", 0 <= solver.momentum < 1, "in [0, 1)"),
              ("momentum2", 0 <= solver.momentum2 < 1, "in [0, 1)"),
              ("clip_gradients", solver.clip_gradients >= 0 or solver.clip_gradients == -1,
               "at least 0, or -1 for no clipping"))
    for field, ok, rule in checks:
        if not ok:
            raise NetSpecError(f"solver {field} must be {rule}, got {getattr(solver, field)}")


def net_to_text(net: caffe_pb2.NetParameter) -> str:
    """Return ``net`` as prototxt text that :func:`parse_net` reads back unchanged."""
    return text_format.MessageToString(net)
