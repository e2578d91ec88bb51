"""A fit's orchestration on the driver: validate, plan, cache the blocks, resume, run the
rounds, hand the trained state to the estimator (which builds its model from it)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from .. import net as netlib
from ..engine.state import SolverState
from ..engine.worker import TrainSpec, named_weights
from . import columns, session
from .blocks import cache_blocks, check_summary, column, release_blocks
from .checkpoint import fit_signature, load_checkpoint, save_checkpoint
from .exchange import CarriedStates, StateServer
from .planning import FitPlan, NetPlan, fit_seed, initial_state, plan_fit, plan_nets
from .reporting import ProgressBar, mlflow_run
from .rounds import RoundStats, log, run_rounds, validation_accuracy


@dataclass
class Trained:
    """What a fit hands its estimator: the nets it planned, the final state by layer, the
    rounds' statistics."""

    nets: NetPlan
    spec: TrainSpec
    weights: dict
    history: list[RoundStats]


def fit(stage, dataset, make_model):
    """Fit ``stage`` (a SparkNetEstimator's params) on ``dataset``.

    Parameters
    ----------
    make_model : callable
        Builds the model from a :class:`Trained` (called inside the fit's MLflow run, which
        logs the model it returns).

    Returns
    -------
    The model ``make_model`` built.

    Raises
    ------
    ValueError
        Naming the param, column, layer or shape at fault, before any Spark job.
    """
    from ..engine.scoring import ScoreSpec
    for name in ("netPrototxt", "solverPrototxt"):
        if not stage.isDefined(name):
            raise ValueError(f"{name} is not set")
    if stage.getHandleInvalid() == "keep":
        raise ValueError("handleInvalid='keep' is for transform (NaN outputs for invalid rows): "
                         "a fit cannot train on null or NaN/Inf values; set 'error' or 'skip' "
                         "to fit, and 'keep' on the model")
    nets = plan_nets(stage)
    columns.check_outputs(stage, nets.deploy.net, nets.deploy.classification)
    columns.check_features(dataset.schema, nets.inputs.features_col)
    if nets.inputs.label_col:  # a net that takes no label needs no label column
        columns.check_label(dataset.schema, nets.inputs.label_col)
    validation = stage.getValidationCol()
    if validation:
        columns.check_boolean(dataset.schema, validation)
    # The initial weights (and any initialWeights caffemodel) are checked on the driver,
    # by its CPU Caffe, before the first Spark job (counting partitions can run one).
    state, layout, outputs = initial_state(nets.train, fit_seed(stage),
                                           stage.getInitialWeights(), nets.deploy.output_blob,
                                           stage.getUseGpu())
    spark = dataset.sparkSession
    session.report_worker_crashes(spark)
    workers = stage.getNumWorkers() or session.partitions(dataset)
    plan = plan_fit(stage, spark, workers, bool(validation))
    fit_id = uuid.uuid4().hex
    server = (StateServer(session.callback_host(spark), state, session.encrypts_states(spark))
              if session.uses_state_server(spark)
              else CarriedStates(spark, state, session.encrypts_states(spark)))
    cached = []
    try:
        blocks, summary = cache_blocks(dataset.filter(~column(validation)) if validation
                                       else dataset, nets.inputs, workers, fit_id)
        cached.append(blocks)
        check_summary(summary, nets.inputs, stage.getHandleInvalid(),
                      outputs if nets.deploy.classification else None)
        gpu = columns.resolve_gpu(stage.getUseGpu(), session.Settings(spark),
                                  [h.device for h in summary])
        train = TrainSpec(**{**nets.train.__dict__, "gpu": gpu,
                             "tf32": stage.getAllowTf32(), "resident": gpu is not None})
        validate = None
        if validation:
            held_out, held = cache_blocks(dataset.filter(column(validation)), nets.inputs,
                                          workers, fit_id + "-validation")
            cached.append(held_out)
            if not sum(h.rows for h in held):
                log.warning("validationCol %r marks no valid row: validation accuracy "
                            "will be NaN", validation)
            spec = ScoreSpec(netlib.net_to_text(nets.deploy.net), stage.getBatchSize(),
                             train.data_top, (nets.deploy.output_blob,), gpu,
                             train.tf32, nets.test_transform)
            top5 = nets.top5 and outputs >= 5
            validate = lambda s: validation_accuracy(  # noqa: E731
                held_out, spec, named_weights(s, layout), top5)
        start, state, history, checkpoint = resume(stage.getCheckpointDir(), plan, train,
                                                   summary, layout, state)
        progress = ProgressBar(plan.rounds, start, stage.getShowProgress())
        with mlflow_run(stage) as tracker, progress.active():
            callbacks = [c for c in (checkpoint, progress, tracker) if c is not None]
            state, history = run_rounds(spark, blocks, train, state, plan, server, validate,
                                        start, history, callbacks)
            model = make_model(Trained(nets, train, named_weights(state, layout), history))
            if tracker is not None:
                tracker.log_model(model)
    finally:
        server.close()
        for handles in cached:
            release_blocks(handles)
    return model


def resume(directory: str | None, plan: FitPlan, train: TrainSpec, summary, layout,
           state: SolverState):
    """Rounds done, state and history to start from (the latest checkpoint in
    ``directory``, if any), and the checkpoint callback for run_rounds (or None)."""
    if not directory:
        return 0, state, [], None
    signature = fit_signature(net=train.net_text, solver=train.solver_text,
                              batch=train.batch_size, tau=plan.tau, seed=plan.seed,
                              transform=train.transform.describe(),
                              rows=[h.rows for h in summary])
    start, history = 0, []
    found = load_checkpoint(directory, signature, layout, plan.rounds)
    if found is not None:
        start, state, done = found
        history = [RoundStats(**stats) for stats in done]
        log.info("resuming from the checkpoint after round %d in %s", start, directory)

    def checkpoint(done: int, current, stats) -> None:
        if done % plan.checkpoint_every == 0 or done == plan.rounds:
            save_checkpoint(directory, done, current, layout, [h.__dict__ for h in stats],
                            signature, done * plan.tau)
    return start, state, history, checkpoint
