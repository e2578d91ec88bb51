"""Conformance checks over both stages, in the spirit of scikit-learn's parametrize_with_checks:
what every pyspark.ml stage should do, whatever its session (classic or Spark Connect)."""
import inspect

import numpy as np

from sparknet_ml import SparkNetEstimator, SparkNetModel
from sparknet_ml.params import DEFAULTS

from .spark.test_bad_input import SOLVER, TINY_NET  # a 16-input, 3-class InnerProduct net

# A value other than the default for every param of SparkNetEstimator.
OTHER_VALUES = {
    "netPrototxt": TINY_NET, "solverPrototxt": SOLVER, "featuresCol": "f", "labelCol": "l",
    "inputShape": [1, 2, 2], "batchSize": 5, "syncInterval": 2, "maxIter": 3,
    "roundsPerJob": 2, "numWorkers": 3, "seed": 9, "predictionCol": "p",
    "probabilityCol": "pr", "rawPredictionCol": "r", "outputBlobs": ["ip"],
    "meanFile": "/nowhere/mean.binaryproto", "initialWeights": "/nowhere/w.caffemodel",
    "useGpu": "false", "allowTf32": True, "validationCol": "v", "validationInterval": 2,
    "handleInvalid": "skip", "checkpointDir": "/nowhere/checkpoints", "checkpointInterval": 3,
    "baseLr": 0.5, "showProgress": False, "scoringBackend": "onnxruntime",
}


def tiny(**params) -> SparkNetEstimator:
    """The 16-input, 3-class InnerProduct net, which trains in a second."""
    return SparkNetEstimator(**{"netPrototxt": TINY_NET, "solverPrototxt": SOLVER,
                                "inputShape": [1, 4, 4], "batchSize": 8, "syncInterval": 2,
                                "maxIter": 2, "seed": 1, "numWorkers": 2,
                                "showProgress": False, **params})


def tiny_rows(spark, n=64):
    rng = np.random.default_rng(0)
    return spark.createDataFrame(
        [(rng.random(16).tolist(), float(i % 3)) for i in range(n)],
        "features array<double>, label double").repartition(2)


def _capitalized(name: str) -> str:
    return name[0].upper() + name[1:]


def check_params(stage, setters: set[str]) -> None:
    """Every Param has a doc, a converter and a getter; those in ``setters`` a setter that
    returns the stage; ``explainParams`` names every one."""
    explained = stage.explainParams()
    for param in stage.params:
        assert param.doc, param.name
        assert param.typeConverter is not None, param.name
        getter = getattr(stage, "get" + _capitalized(param.name))
        assert getter() == stage.getOrDefault(param) if stage.isDefined(param) else True
        if param.name in setters:
            assert getattr(stage, "set" + _capitalized(param.name)) is not None, param.name
        assert param.name in explained, param.name


def check_defaults(cls) -> None:
    """The defaults in ``cls``'s signature are the params' defaults (None: unset)."""
    stage = cls()
    signature = inspect.signature(cls.__init__).parameters if cls is SparkNetEstimator else {}
    for name, default in DEFAULTS.items():
        param = stage.getParam(name)
        if name in signature:
            assert signature[name].default == default, name
        if name == "seed":  # pyspark's default: a hash of the class name
            continue
        if default is None:
            assert not stage.isSet(param), name
            assert not stage.isDefined(param) or stage.getOrDefault(param) is None, name
        else:
            assert stage.getOrDefault(param) == default, name


def check_copy(stage) -> None:
    """``copy`` with extra params changes the copy only; ``copy()`` keeps uid and params."""
    same = stage.copy()
    assert same.uid == stage.uid and same.extractParamMap() == stage.extractParamMap()
    other = stage.copy({stage.batchSize: 7})
    assert other.getBatchSize() == 7 and stage.getBatchSize() != 7


def every_param_set() -> SparkNetEstimator:
    """An estimator whose every param holds a value other than its default."""
    est = SparkNetEstimator(**OTHER_VALUES)
    assert set(OTHER_VALUES) == {p.name for p in est.params}
    return est


def check_save_load(stage, path: str) -> None:
    """Every param survives save and load, and the uid."""
    stage.write().save(path)
    loaded = type(stage).load(path)
    assert loaded.uid == stage.uid
    assert {p.name: v for p, v in loaded.extractParamMap().items()} == \
        {p.name: v for p, v in stage.extractParamMap().items()}


def check_pipeline(df, path: str) -> None:
    """The estimator fits inside a Pipeline; the PipelineModel transforms, saves and loads to
    the same predictions; fitting does not change the estimator's params."""
    from pyspark.ml import Pipeline, PipelineModel
    est = tiny()
    before = est.extractParamMap()
    fitted = Pipeline(stages=[est]).fit(df)
    assert est.extractParamMap() == before
    model = fitted.stages[0]
    assert isinstance(model, SparkNetModel) and model.getBatchSize() == 8
    fitted.write().save(path)
    first = fitted.transform(df).select("prediction").toPandas()["prediction"]
    again = PipelineModel.load(path).transform(df).select("prediction").toPandas()["prediction"]
    assert first.tolist() == again.tolist() and len(first) == df.count()
