"""SparkNetEstimator: SparkNet's distributed Caffe training as a Spark ML Estimator."""
from __future__ import annotations

import uuid

from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.util import MLReadable, MLWritable

from .. import net as netlib
from ..driver import session
from ..driver.blocks import cache_blocks, check_summary, column, release_blocks
from ..driver.checkpoint import fit_signature, load_checkpoint, save_checkpoint
from ..driver.exchange import open_channel
from ..driver.planning import initial_state, plan_nets
from ..driver.reporting import ProgressBar, mlflow_run
from ..driver.rounds import RoundStats, check_slots, log, run_rounds
from ..engine.worker import TrainSpec, named_weights
from ..params import _ScoringSetters, _SparkNetParams, takes_params
from ..driver import columns


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
    @takes_params
    def __init__(self, **params):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    @takes_params
    def setParams(self, **params):
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
        from ..driver.rounds import validation_accuracy
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
        spark = dataset.sparkSession
        workers = self.getNumWorkers() or session.partitions(dataset)
        if self.getRoundsPerJob() > 1:
            check_slots(spark, workers, self.getRoundsPerJob())
        fit_id = uuid.uuid4().hex
        channel = open_channel(spark, state, workers, self.getRoundsPerJob())
        cached = []
        try:
            blocks, summary = cache_blocks(dataset.filter(~column(validation)) if validation
                                           else dataset, plan.inputs, workers, fit_id)
            cached.append(blocks)
            check_summary(summary, plan.inputs, self.getHandleInvalid(),
                          outputs if plan.deploy.classification else None)
            gpu = columns.resolve_gpu(self.getUseGpu(), session.Settings(spark),
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
                    held_out, spec, named_weights(s, layout), top5)
            start, state, history, checkpoint = self._resume(train, summary, layout, state)
            progress = ProgressBar(self.getMaxIter(), start, self.getShowProgress())
            test = plan.test_transform
            with mlflow_run(self) as tracker, progress.active():
                callbacks = [c for c in (checkpoint, progress, tracker) if c is not None]
                state, history = run_rounds(spark, blocks, train, state, self.getMaxIter(),
                                            self.getSyncInterval(), self._seed(), validate,
                                            self.getValidationInterval(), start, history,
                                            callbacks, self.getRoundsPerJob(),
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
