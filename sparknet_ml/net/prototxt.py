"""Safe parsing of Caffe prototxt text: protobuf ``text_format`` only, nothing executed.

>>> net = parse_net('name: "tiny" layer { name: "data" type: "Input" top: "data" }')
>>> net.layer[0].type
'Input'
>>> net_to_text(net).splitlines()[0]
'name: "tiny"'
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
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


_BINARY_HINTS = {
    "net": "give the net's .prototxt here, and a caffemodel's weights as initialWeights",
    "solver": "give the solver's .prototxt here (base_lr, lr_policy, ... as text)",
}


def read_prototxt_file(path, kind: str = "net") -> str:
    """The text of the prototxt file ``path`` (a path or any storage location).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    kind : {"net", "solver"}
        What the file should hold, for the hint when it is binary.

    Raises
    ------
    ValueError
        Naming ``path``: unreadable, over :data:`MAX_PROTOTXT_BYTES`, or binary (a
        ``.caffemodel``, ``.binaryproto`` or a picture, not prototxt text).
    """
    path = os.fspath(path)
    data = storage.read_bytes(path, MAX_PROTOTXT_BYTES, "MAX_PROTOTXT_BYTES")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NetSpecError(f"{path} is binary, not prototxt text (a .caffemodel, .binaryproto "
                           f"or a picture?): {_BINARY_HINTS[kind]}") from None


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
        text = read_prototxt_file(value, "solver" if kind == "SolverParameter" else "net")
        return _parse_text(text, message_type,
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
        :data:`MAX_PROTOTXT_BYTES`, or a deprecated format Caffe's upgrade would abort on or
        cannot upgrade cleanly (see :func:`upgrade_net`).

    Warns
    -----
    UpgradedFormatWarning
        When the net was in a deprecated format and Caffe's upgrade rewrote it.
    """
    return upgrade_net(_parse(value, caffe_pb2.NetParameter))


class UpgradedFormatWarning(UserWarning):
    """A net, caffemodel or solver in a deprecated Caffe format was upgraded as Caffe upgrades
    it on read; the message names what was upgraded."""


def _upgraded(message: Message, upgrade, what: str) -> Message:
    """``message`` run through one of pycaffe's upgrade bindings (``upgrade_net_param`` or
    ``upgrade_solver_param``: Caffe's ``UpgradeNetAsNeeded`` / ``UpgradeSolverAsNeeded``)."""
    data, upgraded, clean = upgrade(message.SerializeToString())
    if not upgraded:
        return message
    if not clean:
        raise NetSpecError(f"{what}: Caffe could not upgrade its {', '.join(upgraded)} "
                           "cleanly (its log above names the layer or field)")
    warnings.warn(f"{what} is in a deprecated Caffe format: upgraded its {', '.join(upgraded)} "
                  "as Caffe does on read (net_to_text gives the current form)",
                  UpgradedFormatWarning)
    out = type(message)()
    out.ParseFromString(data)
    return out


def upgrade_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """``net`` in Caffe's current format, upgraded by Caffe's own ``UpgradeNetAsNeeded`` (V0
    and V1 ``layers``, data transformation fields of V1 data layers, ``input``/``input_dim``
    fields into an ``Input`` layer ``input``, 3-param BatchNorm), as Caffe does on reading a
    net or a caffemodel.

    Returns
    -------
    caffe_pb2.NetParameter
        ``net`` itself when it needs no upgrade, else a new message.

    Raises
    ------
    NetSpecError
        Before Caffe sees the net, for what its upgrade aborts on: both ``layer`` and V1
        ``layers``, V0 layers (upgrade those with Caffe 1.0's tools/upgrade_net_proto_text),
        ``input`` fields without one shape (or four ``input_dim``) each; and when Caffe reports a
        problem upgrading.

    Warns
    -----
    UpgradedFormatWarning
        Naming what was upgraded.
    """
    from caffe import _caffe
    if net.layers and net.layer:
        raise NetSpecError(f"net {net.name!r} has both 'layer' and V1 'layers' (first: "
                           f"{net.layers[0].name!r}); Caffe upgrades only a net in one format")
    for layer in net.layers:
        if layer.HasField("layer"):
            raise NetSpecError(f"net {net.name!r}: layer {layer.name or layer.layer.name!r} is in "
                               "Caffe's V0 format (layers { layer { ... } }); upgrade it with "
                               "Caffe 1.0's tools/upgrade_net_proto_text")
    inputs = len(net.input)
    if net.input_shape and len(net.input_shape) != inputs:
        raise NetSpecError(f"net {net.name!r}: {inputs} 'input' fields and "
                           f"{len(net.input_shape)} 'input_shape'; give one shape per input")
    if not net.input_shape and net.input_dim and len(net.input_dim) != 4 * inputs:
        raise NetSpecError(f"net {net.name!r}: {inputs} 'input' fields and "
                           f"{len(net.input_dim)} 'input_dim'; give four per input")
    return _upgraded(net, _caffe.upgrade_net_param, f"net {net.name!r}")


def parse_solver(value) -> caffe_pb2.SolverParameter:
    """Parse a Caffe solver; ``value`` follows the rules of :func:`parse_net`.

    Returns
    -------
    caffe_pb2.SolverParameter
        A new message, upgraded by Caffe's ``UpgradeSolverAsNeeded`` when it sets the deprecated
        ``solver_type`` enum (with an :class:`UpgradedFormatWarning`).

    Raises
    ------
    NetSpecError
        As :func:`parse_net`; and for both ``solver_type`` and ``type`` (Caffe aborts on it).
    """
    from caffe import _caffe
    solver = _parse(value, caffe_pb2.SolverParameter)
    if solver.HasField("solver_type") and solver.HasField("type"):
        raise NetSpecError(f"solver sets both the deprecated solver_type "
                           f"({caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)}) "
                           f"and type ({solver.type!r}); keep type")
    return _upgraded(solver, _caffe.upgrade_solver_param, "solver")


SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
SCHEDULE_FIELDS = {"fixed": (), "step": ("gamma", "stepsize"), "exp": ("gamma",),
                   "inv": ("gamma", "power"), "multistep": ("gamma", "stepvalue"),
                   "poly": ("power", "max_iter"), "sigmoid": ("gamma", "stepsize")}
"""The solver fields each ``lr_policy`` reads besides ``base_lr``."""


def check_solver(solver: caffe_pb2.SolverParameter, iterations: int | None = None) -> None:
    """Refuse, on the driver, what Caffe's solver would abort the worker process on, or
    silently train wrong or on NaN with: an unknown ``type`` or ``lr_policy`` (Caffe has no
    default policy), a policy without the field it divides by or reads, a
    ``regularization_type`` other than L1/L2, ``iter_size`` < 1, a ``base_lr`` that is not
    positive and finite, a negative or infinite ``weight_decay``, ``momentum`` or ``momentum2``
    outside [0, 1), a ``clip_gradients`` below 0 other than -1 (off), the constants of the
    adaptive types (``delta`` not positive and finite; ``momentum`` other than 0 for AdaGrad
    and RMSProp, ``rms_decay`` outside [0, 1) for RMSProp: Caffe CHECKs those), a ``poly``
    schedule whose ``max_iter`` ends before the fit's ``iterations``, and a schedule whose
    learning rate is negative or not finite at any of the fit's ``iterations``
    (:func:`check_learning_rates`).

    Raises
    ------
    NetSpecError
        Naming the solver field at fault and its value.
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
    kind = f"with type {solver.type!r}"
    checks = [("base_lr", 0 < solver.base_lr < math.inf, "positive and finite"),
              ("iter_size", solver.iter_size >= 1, "at least 1"),
              ("weight_decay", 0 <= solver.weight_decay < math.inf, "at least 0 and finite"),
              ("momentum", 0 <= solver.momentum < 1, "in [0, 1)"),
              ("momentum2", 0 <= solver.momentum2 < 1, "in [0, 1)"),
              ("clip_gradients", solver.clip_gradients >= 0 or solver.clip_gradients == -1,
               "at least 0, or -1 for no clipping")]
    if solver.type in ("AdaGrad", "RMSProp", "AdaDelta", "Adam"):  # they divide by it
        checks.append(("delta", 0 < solver.delta < math.inf, f"positive and finite {kind}"))
    if solver.type in ("AdaGrad", "RMSProp"):
        checks.append(("momentum", solver.momentum == 0, f"0 {kind}"))
    if solver.type == "RMSProp":
        checks.append(("rms_decay", 0 <= solver.rms_decay < 1, f"in [0, 1) {kind}"))
    for field, ok, rule in checks:
        if not ok:
            raise NetSpecError(f"solver {field} must be {rule}, got {_value(solver, field)}")
    if iterations is not None:
        check_learning_rates(solver, iterations)


def learning_rates(solver: caffe_pb2.SolverParameter, iterations) -> np.ndarray:
    """The learning rate at each of ``iterations``, as Caffe's ``SGDSolver::GetLearningRate``
    computes it (float32; ``multistep`` with the drops of every step value reached, in order).

    Examples
    --------
    >>> solver = parse_solver('base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 10')
    >>> print(learning_rates(solver, [0, 9, 10, 25]))
    [0.1   0.1   0.05  0.025]
    """
    i = np.asarray(iterations, np.int64)
    base, gamma, power = (np.float32(v) for v in (solver.base_lr, solver.gamma, solver.power))
    policy = solver.lr_policy
    with np.errstate(all="ignore"):
        if policy == "fixed":
            rate = np.full(i.shape, base)
        elif policy in ("step", "exp", "multistep"):  # base_lr * gamma ^ step, in double
            if policy == "step":
                step = i // solver.stepsize
            elif policy == "exp":
                step = i
            else:
                reached = np.asarray(solver.stepvalue)[None, :] <= i[:, None]
                step = np.cumprod(reached, axis=1).sum(axis=1)
            rate = np.float64(base) * np.power(np.float64(gamma), step)
        elif policy == "inv":
            rate = base * np.power(np.float32(1) + gamma * i.astype(np.float32), -power)
        elif policy == "poly":
            rate = base * np.power(np.float32(1) - i.astype(np.float32)
                                   / np.float32(solver.max_iter), power)
        else:  # sigmoid
            rate = base * (np.float32(1) / (np.float32(1) + np.exp(
                -gamma * (i.astype(np.float32) - np.float32(solver.stepsize)))))
        return rate.astype(np.float32)


def _turning_points(solver: caffe_pb2.SolverParameter, first: int, stop: int) -> np.ndarray:
    """The iterations of ``range(first, stop)`` where the learning rate can reach its extremes
    or first turn negative or NaN: both ends, the second (``gamma ^ step`` alternates sign when
    ``gamma`` < 0), the next step of ``step``, each step value of ``multistep``, and where
    ``1 + gamma * iteration`` crosses 0 in ``inv``. Between two of them the rate is monotone
    and of one sign, so checking them checks every iteration without computing each."""
    points = [first, first + 1, stop - 1]
    if solver.lr_policy == "step":
        points += [solver.stepsize * (first // solver.stepsize + 1)]
    elif solver.lr_policy == "multistep":
        points += list(solver.stepvalue)
    elif solver.lr_policy == "inv" and solver.gamma < 0:
        zero = math.ceil(-1 / solver.gamma)  # where 1 + gamma * iteration reaches 0
        points += [zero - 1, zero, zero + 1]
    points = np.unique(points)
    return points[(points >= first) & (points < stop)]


def _value(solver: caffe_pb2.SolverParameter, field: str):
    """``solver``'s ``field`` for a message: a float as the float32 Caffe reads (0.01, not
    0.009999999776482582)."""
    value = getattr(solver, field)
    return str(np.float32(value)) if isinstance(value, float) else value


def _schedule(solver: caffe_pb2.SolverParameter) -> str:
    """The schedule's fields, as ``lr_policy 'inv' (base_lr 0.01, gamma -0.001, power 0.75)``."""
    fields = ", ".join(f"{name} {_value(solver, name)}"
                       for name in ("base_lr", *SCHEDULE_FIELDS[solver.lr_policy]))
    return f"lr_policy {solver.lr_policy!r} ({fields})"


def check_learning_rates(solver: caffe_pb2.SolverParameter, iterations: int) -> None:
    """Refuse a schedule whose learning rate is negative, infinite or NaN at any iteration of
    ``range(iterations)`` (Caffe checks none of it, and every step would then be NaN).

    Raises
    ------
    NetSpecError
        Naming the policy's fields and values, an iteration where the rate is so, and the rate.

    Examples
    --------
    >>> check_learning_rates(parse_solver('base_lr: 0.01 lr_policy: "inv" gamma: -0.001 '
    ...                                   'power: 0.75'), 2000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sparknet_ml.net.prototxt.NetSpecError: solver lr_policy 'inv' (base_lr 0.01, gamma -0.001, \
power 0.75) gives a learning rate of inf at iteration 1000 of the fit's 2000 ...
    """
    points = _turning_points(solver, 0, iterations)
    rates = learning_rates(solver, points)
    bad = np.flatnonzero(~(np.isfinite(rates) & (rates >= 0)))
    if bad.size:
        raise NetSpecError(f"solver {_schedule(solver)} gives a learning rate of "
                           f"{str(rates[bad[0]])} at iteration {points[bad[0]]} of the fit's "
                           f"{iterations} (maxIter x syncInterval): each must be finite and "
                           "at least 0")


def divergence_hint(solver: caffe_pb2.SolverParameter, first: int, stop: int) -> str:
    """The likely cause of a loss or weights turning non-finite during the iterations
    ``range(first, stop)`` of a fit whose solver passed :func:`check_solver`: a schedule
    that raised the learning rate above ``base_lr``, else a ``base_lr`` too large for the net
    and data.

    Examples
    --------
    >>> print(divergence_hint(parse_solver('base_lr: 0.5 lr_policy: "fixed"'), 0, 50))
    the learning rate was at most base_lr 0.5 (lr_policy 'fixed'): lower base_lr, or set \
clip_gradients
    """
    peak = float(learning_rates(solver, _turning_points(solver, first, stop)).max())
    if peak > np.float32(solver.base_lr):
        return (f"{_schedule(solver)} raised the learning rate to {peak:.4g}, "
                f"{peak / solver.base_lr:.4g} x base_lr: make the schedule decay")
    return (f"the learning rate was at most base_lr {solver.base_lr:.4g} (lr_policy "
            f"{solver.lr_policy!r}): lower base_lr, or set clip_gradients")


def net_to_text(net: caffe_pb2.NetParameter) -> str:
    """Return ``net`` as prototxt text that :func:`parse_net` reads back unchanged."""
    return text_format.MessageToString(net)
