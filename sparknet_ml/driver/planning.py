"""Planning a fit on the driver: the nets, data transforms and initial state derived from a
stage's params, before any Spark job (no Spark here; Caffe on the driver's CPU)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from caffe.proto import caffe_pb2

from .. import net as netlib
from ..engine.transform import Transform
from ..engine.worker import TrainSpec
from . import columns
from ..tasks.blocks import InputSpec


@dataclass(frozen=True)
class FitPlan:
    """How a fit's rounds run, decided once on the driver (:func:`plan_fit`).

    Attributes
    ----------
    rounds, tau, seed, workers : int
        maxIter, syncInterval, the seed as Caffe takes it, and the tasks per round.
    rounds_per_job : int or None
        Rounds per Spark job; None: barrier jobs sized by the rounds' time
        (:func:`sparknet_ml.driver.rounds.next_stop`).
    checkpoint_every, validate_every : int or None
        Where the driver needs the state (a job ends there); None when not needed.
    """

    rounds: int
    tau: int
    seed: int
    workers: int
    rounds_per_job: int | None
    checkpoint_every: int | None = None
    validate_every: int | None = None

    @property
    def barrier(self) -> bool:
        """Whether rounds run in barrier jobs, averaged by their tasks."""
        return self.rounds_per_job != 1

    def holds(self) -> tuple[int, ...]:
        """The intervals on whose multiples a job ends."""
        return tuple(k for k in (self.checkpoint_every, self.validate_every) if k)


def fit_seed(stage) -> int:
    """The stage's seed as the non-negative integer numpy and Caffe take (pyspark's default,
    a hash of the class name, can be negative)."""
    return stage.getSeed() % 2 ** 63


def plan_fit(stage, spark, workers: int, validating: bool) -> FitPlan:
    """The :class:`FitPlan` of ``stage``'s params on this session: ``roundsPerJob='auto'``
    takes barrier jobs when the cluster has a task slot for every worker, else one job per
    round (logged with the reason).

    Raises
    ------
    ValueError
        When an explicit ``roundsPerJob`` > 1 needs more task slots than the cluster has
        (Spark itself would retry for up to 10 minutes).
    """
    import logging
    from . import session
    from .rounds import check_slots
    asked = stage.getRoundsPerJob()
    per_job = None if asked == "auto" else asked
    if per_job != 1:
        dynamic = (session.setting(spark, "spark.dynamicAllocation.enabled", "false")
                   .strip().lower() == "true")
        slots = None if dynamic else check_slots(spark, workers)
        if slots is not None and slots < workers:
            short = f"the cluster has {slots} task slots for {workers} workers"
            if per_job is not None:
                raise ValueError(
                    f"roundsPerJob={per_job} runs each job as a barrier stage that needs all "
                    f"{workers} workers' tasks at once, but {short}: lower numWorkers or set "
                    "roundsPerJob='auto' or 1")
        else:
            short = ("dynamic allocation is on (spark.dynamicAllocation.enabled)" if dynamic
                     else "the session cannot tell its task slots" if slots is None else None)
        if short and per_job is None:
            logging.getLogger("sparknet_ml").info(
                "roundsPerJob='auto': one Spark job per round, averaged on the driver, "
                "because %s", short)
            per_job = 1
    return FitPlan(rounds=stage.getMaxIter(), tau=stage.getSyncInterval(),
                   seed=fit_seed(stage), workers=workers, rounds_per_job=per_job,
                   checkpoint_every=(stage.getCheckpointInterval() if stage.getCheckpointDir()
                                     else None),
                   validate_every=stage.getValidationInterval() if validating else None)


@dataclass(frozen=True)
class NetPlan:
    """The nets and input handling derived, on the driver, from a stage's params."""

    train: TrainSpec
    inputs: InputSpec
    deploy: "netlib.DeployNet"
    test_transform: Transform  # validation and scoring: center crop, mean, scale
    top5: bool = False  # the TEST phase reports top-5 accuracy (GoogLeNet's loss3/top-5)


def plan_transforms(stage, net) -> tuple[tuple[int, ...], Transform, Transform]:
    """The stored example's shape and the TRAIN and TEST data transforms of ``stage``'s net,
    with the mean file (``meanFile`` or ``transform_param.mean_file``) read on the driver.

    Raises
    ------
    ValueError
        Naming the layer and file: an unreadable mean file, a mean file beside mean_value,
        a mean or crop that does not fit the stored example, no shape to be found, or TRAIN
        and TEST crops of different sizes.
    """
    from ..persistence.caffemodel import read_mean_file
    phases = {phase: netlib.data_transform(net, phase)
              for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST)}
    override, means = stage.getMeanFile(), {}
    for layer, param in phases.values():
        path = override or param.mean_file
        if override and param.mean_value:
            raise ValueError(f"layer {layer!r}: meanFile {override!r} and transform_param."
                             "mean_value are both set; Caffe takes one of them")
        if path and path not in means:
            try:
                means[path] = read_mean_file(path)
            except ValueError as err:
                raise ValueError(f"layer {layer!r}: {err}" if layer else str(err)) from None
    shape = (stage.getInputShape() or netlib.infer_input_shape(netlib.filter_phase(net, 0))
             or next((m.shape for m in means.values()), None))
    if not shape:
        raise ValueError("inputShape is not set and neither the net nor a mean file states "
                         "the example's shape: set inputShape=[C, H, W]")
    shape = tuple(int(d) for d in shape)
    train, test = (
        netlib.resolve_transform(layer, param, shape, means.get(override or param.mean_file),
                                 override or param.mean_file or None)
        for layer, param in (phases[caffe_pb2.TRAIN], phases[caffe_pb2.TEST]))
    if train.output_shape(shape) != test.output_shape(shape):
        raise ValueError(f"the TRAIN data layer {phases[caffe_pb2.TRAIN][0]!r} gives "
                         f"{list(train.output_shape(shape))} examples and the TEST one "
                         f"{phases[caffe_pb2.TEST][0]!r} {list(test.output_shape(shape))}; "
                         "both phases must feed the net the same shape")
    return shape, train, test


def plan_nets(stage) -> NetPlan:
    """Parse and derive the training and deploy nets of ``stage``; no Spark job, no Caffe.

    Raises
    ------
    ValueError
        Naming the param, layer or shape at fault: maxIter <= 0, a bad or oversized net or
        solver (:func:`~sparknet_ml.net.prototxt.check_solver`: e.g. a base_lr or learning-rate
        schedule that is not positive and finite), a disallowed layer, a blob or input batch
        over its cap, a data transform that does not fit (:func:`plan_transforms`).
    """
    from ..net.layers import check_blob_shapes
    if stage.getMaxIter() <= 0:
        raise ValueError(f"maxIter must be a positive integer, got {stage.getMaxIter()}")
    net = netlib.parse_net(stage.getNetPrototxt())
    netlib.check_layers(net)
    check_blob_shapes(net)
    shape, train_transform, test_transform = plan_transforms(stage, net)
    batch = stage.getBatchSize()
    columns.check_input_memory(batch, shape)
    columns.check_round_size(stage.getSyncInterval(), batch)
    net_shape = train_transform.output_shape(shape)
    train_net = netlib.train_net(net, net_shape, batch)
    data_top, label_top = netlib.data_layer_tops(train_net)
    solver = netlib.parse_solver(stage.getSolverPrototxt())
    if stage.getBaseLr() is not None:
        solver.base_lr = stage.getBaseLr()
    netlib.check_solver(solver, stage.getMaxIter() * stage.getSyncInterval())
    return NetPlan(
        train=TrainSpec(netlib.net_to_text(train_net), netlib.net_to_text(solver), batch,
                        data_top, label_top or "", transform=train_transform),
        inputs=InputSpec(stage.getFeaturesCol(), stage.getLabelCol() if label_top else "",
                         shape, netlib.resizes_images(net), netlib.ignore_label(net)),
        deploy=netlib.deploy_net(net, net_shape, batch), test_transform=test_transform,
        top5=5 in netlib.accuracy_top_ks(net))


def initial_state(spec: TrainSpec, seed: int, initial_weights: str | None, output_blob: str,
                  use_gpu: str = "false"):
    """Build the solver once on the driver (CPU): seeded fillers, then optional fine-tuning
    weights. Returns the state, the (layer name, blob count) layout of ``net.params`` and the
    number of values per example in ``output_blob``.

    A child process first builds the solver and, unless the fit may run on GPUs (``use_gpu``
    "true", or "auto" with a CUDA pycaffe), takes one step with it on the CPU, so that Caffe's
    own message for a net it cannot run reaches the user before any Spark job."""
    import caffe
    from ..engine.scoring import load_weights
    from ..engine.solver import make_solver
    from ..engine.worker import get_state
    from ..engine.devices import caffe_has_cuda
    from ..engine.probe import check_caffe_builds
    from ..persistence.caffemodel import read_caffemodel
    on_cpu = use_gpu == "false" or (use_gpu == "auto" and not caffe_has_cuda())
    check_caffe_builds(spec.net_text, spec.solver_text, spec.batch_size, run=on_cpu)
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed % (2 ** 31))
    solver = make_solver(spec.net_text, spec.solver_text, spec.batch_size)
    if initial_weights:
        given = read_caffemodel(initial_weights)
        matching = {name: blobs for name, blobs in given.items() if name in solver.net.params}
        if not matching:
            raise ValueError(f"initialWeights {initial_weights}: no layer of the caffemodel "
                             f"({', '.join(sorted(given)) or 'none'}) is a learnable layer "
                             f"of the net ({', '.join(solver.net.params)})")
        current = {name: [b.data for b in blobs] for name, blobs in solver.net.params.items()}
        load_weights(solver.net, {**current, **matching})
    layout = [(name, len(blobs)) for name, blobs in solver.net.params.items()]
    outputs = int(np.prod(solver.net.blobs[output_blob].data.shape[1:]))
    return get_state(solver), layout, outputs
