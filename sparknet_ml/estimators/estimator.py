"""SparkNetEstimator: SparkNet's distributed Caffe training as a Spark ML Estimator."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
from caffe.proto import caffe_pb2
from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.util import MLReadable, MLWritable

from .. import net as netlib
from ..distributed.blocks import InputSpec, check_summary, column
from ..distributed.checkpoint import fit_signature, load_checkpoint, save_checkpoint
from ..distributed.exchange import SocketChannel, SparkChannel, plan_route
from ..distributed.reporting import ProgressBar, mlflow_run
from ..distributed.rounds import (FaultInjection, RoundStats, cache_blocks, check_slots, log,
                                  release_blocks, run_rounds)
from ..engine.transform import Transform
from ..engine.worker import TrainSpec, named_weights
from ..params import _ScoringSetters, _SparkNetParams
from . import columns


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
        solver, a disallowed layer, a blob or input batch over its cap, base_lr <= 0 or NaN,
        a data transform that does not fit (:func:`plan_transforms`).
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
    netlib.check_solver(solver, stage.getMaxIter() * stage.getSyncInterval())
    if stage.getBaseLr() is not None:
        solver.base_lr = stage.getBaseLr()
    if not solver.base_lr > 0:
        raise ValueError(f"solver base_lr must be positive, got {solver.base_lr}")
    return NetPlan(
        train=TrainSpec(netlib.net_to_text(train_net), netlib.net_to_text(solver), batch,
                        data_top, label_top or "", transform=train_transform),
        inputs=InputSpec(stage.getFeaturesCol(), stage.getLabelCol() if label_top else "",
                         shape, netlib.resizes_images(net), netlib.ignore_label(net)),
        deploy=netlib.deploy_net(net, net_shape, batch), test_transform=test_transform,
        top5=5 in netlib.accuracy_top_ks(net))


def initial_state(spec: TrainSpec, seed: int, initial_weights: str | None, output_blob: str):
    """Build the solver once on the driver (CPU): seeded fillers, then optional fine-tuning
    weights. Returns the state, the (layer name, blob count) layout of ``net.params`` and the
    number of values per example in ``output_blob``."""
    import caffe
    from ..engine.scoring import load_weights
    from ..engine.solver import make_solver
    from ..engine.worker import get_state
    from ..engine.probe import check_caffe_builds
    from ..persistence.caffemodel import read_caffemodel
    check_caffe_builds(spec.net_text, spec.solver_text, spec.batch_size)
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


def state_channel(sc, state, workers: int, rounds_per_job: int):
    """How this fit's states travel (:func:`~sparknet_ml.distributed.exchange.plan_route`
    against the driver JVM's heap and ``spark.driver.maxResultSize``), logged."""
    state_bytes = sum(a.nbytes for a in state.weights + state.history)
    route = plan_route(state_bytes, workers, rounds_per_job,
                       sc._jvm.java.lang.Runtime.getRuntime().maxMemory(),
                       sc._jsc.sc().conf().getSizeAsBytes("spark.driver.maxResultSize", "1g"))
    log.info("%s", route.reason)
    if route.sockets:
        return SocketChannel(sc.getConf().get("spark.driver.host", "127.0.0.1"))
    return SparkChannel(sc)


class SparkNetEstimator(Estimator, _SparkNetParams, _ScoringSetters, MLReadable, MLWritable):
    """Trains a Caffe net on a DataFrame with SparkNet's scheme.

    Each of ``maxIter`` rounds broadcasts the weights, runs ``syncInterval`` local SGD
    iterations of the Caffe solver on every partition's own data, and averages the
    partitions' weights (and solver history) weighted by samples seen.

    Examples
    --------
    >>> from sparknet_ml import SparkNetEstimator, zoo
    >>> est = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train"),
    ...                         solverPrototxt=zoo.prototxt("lenet_solver"),
    ...                         inputShape=[1, 28, 28], syncInterval=10, maxIter=5)
    >>> est.getSyncInterval(), est.getBatchSize()
    (10, 64)
    """

    @keyword_only
    def __init__(self, *, netPrototxt=None, solverPrototxt=None, featuresCol="features",
                 labelCol="label", inputShape=None, batchSize=64, syncInterval=50, maxIter=40,
                 roundsPerJob=1, numWorkers=None, seed=None, predictionCol="prediction",
                 probabilityCol="probability", rawPredictionCol="rawPrediction",
                 outputBlobs=None, meanFile=None, initialWeights=None, useGpu="auto",
                 allowTf32=False, validationCol=None, validationInterval=5, handleInvalid="error",
                 checkpointDir=None, checkpointInterval=10, baseLr=None, showProgress=True):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, netPrototxt=None, solverPrototxt=None, featuresCol="features",
                  labelCol="label", inputShape=None, batchSize=64, syncInterval=50, maxIter=40,
                  roundsPerJob=1, numWorkers=None, seed=None, predictionCol="prediction",
                  probabilityCol="probability", rawPredictionCol="rawPrediction",
                  outputBlobs=None, meanFile=None, initialWeights=None, useGpu="auto",
                  allowTf32=False, validationCol=None, validationInterval=5, handleInvalid="error",
                  checkpointDir=None, checkpointInterval=10, baseLr=None, showProgress=True):
        """Sets params; same keywords as the constructor."""
        return self._set(**self._input_kwargs)

    def setNetPrototxt(self, value):
        """Sets netPrototxt (text, a file path or a NetParameter)."""
        return self._set(netPrototxt=value)

    def setSolverPrototxt(self, value):
        """Sets solverPrototxt (text, a file path or a SolverParameter)."""
        return self._set(solverPrototxt=value)

    def setLabelCol(self, value):
        """Sets labelCol."""
        return self._set(labelCol=value)

    def setInputShape(self, value):
        """Sets inputShape."""
        return self._set(inputShape=value)

    def setSyncInterval(self, value):
        """Sets syncInterval (tau)."""
        return self._set(syncInterval=value)

    def setMaxIter(self, value):
        """Sets maxIter (number of averaging rounds)."""
        return self._set(maxIter=value)

    def setRoundsPerJob(self, value):
        """Sets roundsPerJob."""
        return self._set(roundsPerJob=value)

    def setNumWorkers(self, value):
        """Sets numWorkers."""
        return self._set(numWorkers=value)

    def setSeed(self, value):
        """Sets seed."""
        return self._set(seed=value)

    def setMeanFile(self, value):
        """Sets meanFile (a mean image .binaryproto; overrides transform_param.mean_file)."""
        return self._set(meanFile=value)

    def setInitialWeights(self, value):
        """Sets initialWeights (a .caffemodel path)."""
        return self._set(initialWeights=value)

    def setValidationCol(self, value):
        """Sets validationCol."""
        return self._set(validationCol=value)

    def setValidationInterval(self, value):
        """Sets validationInterval."""
        return self._set(validationInterval=value)

    def setHandleInvalid(self, value):
        """Sets handleInvalid ('error' or 'skip')."""
        return self._set(handleInvalid=value)

    def setCheckpointDir(self, value):
        """Sets checkpointDir."""
        return self._set(checkpointDir=value)

    def setCheckpointInterval(self, value):
        """Sets checkpointInterval."""
        return self._set(checkpointInterval=value)

    def setBaseLr(self, value):
        """Sets baseLr (overrides the solver's base_lr)."""
        return self._set(baseLr=value)

    def setShowProgress(self, value):
        """Sets showProgress."""
        return self._set(showProgress=value)

    def _fit(self, dataset):
        from ..distributed.rounds import validation_accuracy
        from ..engine.scoring import ScoreSpec
        from .model import SparkNetModel
        for name in ("netPrototxt", "solverPrototxt"):
            if not self.isDefined(name):
                raise ValueError(f"{name} is not set")
        plan = plan_nets(self)
        columns.check_outputs(self, plan.deploy.net, plan.deploy.classification)
        columns.check_features(dataset.schema, plan.inputs.features_col)
        if plan.inputs.label_col:  # a net that takes no label needs no label column
            columns.check_label(dataset.schema, plan.inputs.label_col)
        validation = self.getValidationCol()
        if validation:
            columns.check_boolean(dataset.schema, validation)
        # The initial weights (and any initialWeights caffemodel) are checked on the driver,
        # by its CPU Caffe, before the first Spark job (counting partitions can run one).
        state, layout, outputs = initial_state(plan.train, self._seed(),
                                               self.getInitialWeights(),
                                               plan.deploy.output_blob)
        workers = self.getNumWorkers() or dataset.rdd.getNumPartitions()
        sc = dataset.sparkSession.sparkContext
        faults = FaultInjection.from_conf(sc.getConf())
        if self.getRoundsPerJob() > 1:
            check_slots(sc, workers, self.getRoundsPerJob())
        fit_id = uuid.uuid4().hex
        channel = state_channel(sc, state, workers, self.getRoundsPerJob())
        cached = []
        try:
            blocks, summary = cache_blocks(dataset.filter(~column(validation)) if validation
                                           else dataset, plan.inputs, workers, fit_id)
            cached.append(blocks)
            check_summary(summary, plan.inputs, self.getHandleInvalid(),
                          outputs if plan.deploy.classification else None)
            gpu = columns.resolve_gpu(self.getUseGpu(), sc.getConf(),
                                      [h.device for h in summary])
            train = TrainSpec(**{**plan.train.__dict__, "gpu": gpu,
                                 "tf32": self.getAllowTf32(), "resident": gpu is not None})
            validate = None
            if validation:
                held_out, held = cache_blocks(dataset.filter(column(validation)), plan.inputs,
                                              workers, fit_id + "-validation")
                cached.append(held_out)
                if not sum(h.rows for h in held):
                    log.warning("validationCol %r marks no valid row: validation accuracy "
                                "will be NaN", validation)
                spec = ScoreSpec(netlib.net_to_text(plan.deploy.net), self.getBatchSize(),
                                 train.data_top, (plan.deploy.output_blob,), gpu,
                                 train.tf32, plan.test_transform)
                top5 = plan.top5 and outputs >= 5
                validate = lambda s: validation_accuracy(  # noqa: E731
                    sc, held_out, spec, named_weights(s, layout), top5)
            start, state, history, checkpoint = self._resume(train, summary, layout, state)
            progress = ProgressBar(self.getMaxIter(), start, self.getShowProgress())
            test = plan.test_transform
            with mlflow_run(self) as tracker, progress.active():
                callbacks = [c for c in (checkpoint, progress, tracker) if c is not None]
                state, history = run_rounds(sc, blocks, train, state, self.getMaxIter(),
                                            self.getSyncInterval(), self._seed(), validate,
                                            self.getValidationInterval(), start, history,
                                            faults, callbacks, self.getRoundsPerJob(),
                                            self._checkpoint_every(), channel)
                # the model keeps what its deploy net uses: a TRAIN-only learnable layer (an
                # auxiliary head) trains but is neither scored nor saved
                scored = {layer.name for layer in plan.deploy.net.layer}
                model = SparkNetModel._create(
                    weights={name: blobs for name, blobs in named_weights(state, layout).items()
                             if name in scored},
                    deploy_text=netlib.net_to_text(plan.deploy.net),
                    output_blob=plan.deploy.output_blob,
                    classification=plan.deploy.classification,
                    probabilities=plan.deploy.probabilities, data_top=train.data_top,
                    history=[h.__dict__ for h in history], scale=test.scale,
                    mean=list(test.mean_values), mean_image=test.mean_image,
                    crop=None if test.crop is None else list(test.crop),
                    input_shape=list(plan.inputs.input_shape), resize=plan.inputs.resize)
                model._resetUid(self.uid)
                model = self._copyValues(model)
                if tracker is not None:
                    tracker.log_model(model)
        finally:
            channel.close()
            for handles in cached:
                release_blocks(handles)
        return model

    def _seed(self) -> int:
        """The seed as the non-negative integer numpy and Caffe take (pyspark's default, a
        hash of the class name, can be negative)."""
        return self.getSeed() % 2 ** 63

    def _checkpoint_every(self) -> tuple[int, ...]:
        """The checkpoint interval, when checkpoints are written (a job ends on its
        multiples)."""
        return (self.getCheckpointInterval(),) if self.getCheckpointDir() else ()

    def _resume(self, train: TrainSpec, summary, layout, state):
        """Rounds done, state and history to start from (the latest checkpoint in
        checkpointDir, if any), and the checkpoint callback for run_rounds (or None)."""
        directory = self.getCheckpointDir()
        if not directory:
            return 0, state, [], None
        tau, interval, rounds = (self.getSyncInterval(), self.getCheckpointInterval(),
                                 self.getMaxIter())
        signature = fit_signature(net=train.net_text, solver=train.solver_text,
                                  batch=train.batch_size, tau=tau, seed=self._seed(),
                                  transform=train.transform.describe(),
                                  rows=[h.rows for h in summary])
        start, history = 0, []
        found = load_checkpoint(directory, signature, layout, rounds)
        if found is not None:
            start, state, done = found
            history = [RoundStats(**stats) for stats in done]
            log.info("resuming from the checkpoint after round %d in %s", start, directory)

        def checkpoint(done: int, current, stats) -> None:
            if done % interval == 0 or done == rounds:
                save_checkpoint(directory, done, current, layout, [h.__dict__ for h in stats],
                                signature, done * tau)
        return start, state, history, checkpoint

    @classmethod
    def read(cls):
        """Returns an MLReader that checks the saved class before loading."""
        from ..persistence import StageReader
        return StageReader(cls)

    def write(self):
        """Returns an MLWriter: params as JSON metadata, nothing pickled."""
        from ..persistence import StageWriter
        return StageWriter(self)
