"""Bad input is refused on the driver before any Spark job; saved models are loaded safely."""
import contextlib
import glob
import json
import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetEstimator, SparkNetModel  # noqa: E402
from sparknet_ml.net.prototxt import MAX_PROTOTXT_BYTES  # noqa: E402
from sparknet_ml.persistence.caffemodel import MAX_CAFFEMODEL_BYTES  # noqa: E402

TINY_NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 8 dim: 1 dim: 4 dim: 4 } shape { dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = 'base_lr: 0.1 lr_policy: "fixed"'


def tiny(**params):
    return SparkNetEstimator(**{"netPrototxt": TINY_NET, "solverPrototxt": SOLVER,
                                "batchSize": 8, "syncInterval": 2, "maxIter": 1, "seed": 1,
                                **params})


@pytest.fixture(scope="module")
def df(spark):
    rng = np.random.default_rng(0)
    rows = [(rng.random(16).tolist(), float(i % 3), f"s{i}", [f"{i}"], i % 2 == 0)
            for i in range(64)]
    schema = "features array<double>, label double, text string, words array<string>, flag boolean"
    return spark.createDataFrame(rows, schema).repartition(2).cache()


@pytest.fixture(scope="module")
def model(df):
    return tiny().fit(df)


@contextlib.contextmanager
def no_spark_job(spark):
    """Assert that the block starts no Spark job."""
    tracker = spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup())
    yield
    assert len(tracker.getJobIdsForGroup()) == before


def fails_before_any_job(spark, df, est, error, match):
    with no_spark_job(spark), pytest.raises(error, match=match):
        est.fit(df)


def weights_from(path):
    """An estimator fine-tuning from ``path``."""
    return tiny(initialWeights=str(path), numWorkers=2)


@pytest.mark.parametrize("params, match", [
    ({"featuresCol": "pixels"}, "column 'pixels' not found; the DataFrame has: features, label"),
    ({"labelCol": "target"}, "column 'target' not found"),
    ({"featuresCol": "text"}, "features column 'text' has type string; expected vector"),
    ({"featuresCol": "words"}, "features column 'words' has type array<string>"),
    ({"featuresCol": "flag"}, "features column 'flag' has type boolean"),
    ({"labelCol": "text"}, "label column 'text' has type string; expected a numeric type"),
    ({"labelCol": "flag"}, "label column 'flag' has type boolean"),
    ({"labelCol": "features"}, "label column 'features' has type array<double>"),
    ({"validationCol": "label"}, "validation column 'label' has type double; expected boolean"),
])
def test_bad_columns_fail_before_any_spark_job(spark, df, params, match):
    fails_before_any_job(spark, df, tiny(**params), ValueError, match)


def test_malformed_prototxt_fails_with_line_and_column(spark, df):
    broken = TINY_NET.replace('top: "ip"', 'top: "ip" num_output: 3', 1)
    fails_before_any_job(spark, df, tiny(netPrototxt=broken), ValueError,
                         r"NetParameter text: line 4 column \d+: .*num_output")
    fails_before_any_job(spark, df, tiny(solverPrototxt="base_lr: 0.1\nlr_policy: fixed"),
                         ValueError, "SolverParameter text: line 2 column 12")


@pytest.mark.parametrize("kind", ["Python", "HDF5Output", "NoSuchLayer"])
def test_disallowed_layer_types_fail_naming_layer_and_type(spark, df, kind):
    net = TINY_NET + f'layer {{ name: "bad" type: "{kind}" bottom: "ip" }}\n'
    fails_before_any_job(spark, df, tiny(netPrototxt=net), ValueError,
                         f"layer 'bad' has type '{kind}', which sparknet_ml does not allow")


def test_max_iter_and_solver_base_lr_are_checked_at_fit(spark, df):
    for value in (0, -2):
        fails_before_any_job(spark, df, tiny(maxIter=value), ValueError,
                             f"maxIter must be a positive integer, got {value}")
    fails_before_any_job(spark, df, tiny(solverPrototxt='base_lr: nan lr_policy: "fixed"'),
                         ValueError, "solver base_lr must be positive and finite, got nan")
    fails_before_any_job(spark, df, tiny(solverPrototxt='base_lr: 0 lr_policy: "fixed"'),
                         ValueError, "solver base_lr must be positive and finite, got 0.0")


@pytest.mark.parametrize("solver, match", [
    ('type: "SGD" base_lr: 0.01', "solver lr_policy '' is not one of .*Caffe has no default"),
    ('base_lr: 0.01 lr_policy: "steps"', "solver lr_policy 'steps' is not one of fixed, step"),
    ('base_lr: 0.01 lr_policy: "step"', "lr_policy 'step' needs a positive stepsize"),
    ('base_lr: 0.01 lr_policy: "multistep"', "lr_policy 'multistep' needs a positive stepvalue"),
    ('base_lr: 0.01 lr_policy: "poly" power: 1', "lr_policy 'poly' needs a positive max_iter"),
    ('base_lr: 0.01 lr_policy: "fixed" type: "LBFGS"', "solver type 'LBFGS' is not one of SGD"),
])
def test_solvers_caffe_would_abort_on_fail_before_any_job(spark, df, solver, match):
    fails_before_any_job(spark, df, tiny(solverPrototxt=solver), ValueError, match)


@pytest.mark.parametrize("solver, params, match", [
    ('base_lr: 1 lr_policy: "fixed" type: "AdaDelta" momentum: 0.95 delta: 0', {},
     "solver delta must be positive and finite with type 'AdaDelta', got 0.0"),
    ('base_lr: 0.01 lr_policy: "fixed" type: "RMSProp" rms_decay: 1.5', {},
     "solver rms_decay must be in \\[0, 1\\) with type 'RMSProp', got 1.5"),
    ('base_lr: 0.01 lr_policy: "inv" gamma: -0.001 power: 0.75', {"maxIter": 1000},
     "solver lr_policy 'inv' \\(base_lr 0.01, gamma -0.001, power 0.75\\) gives a learning "
     "rate of inf at iteration 1000 of the fit's 2000 \\(maxIter x syncInterval\\)"),
    ('base_lr: 0.01 lr_policy: "exp" gamma: -0.5', {},
     "gamma -0.5\\) gives a learning rate of -0.005 at iteration 1"),
    ('base_lr: inf lr_policy: "fixed"', {}, "solver base_lr must be positive and finite, got inf"),
    ('base_lr: 0.01 lr_policy: "exp" gamma: 1.5', {"baseLr": 1e30, "maxIter": 100},
     "base_lr 1e\\+30, gamma 1.5\\) gives a learning rate of inf at iteration 199"),
])
def test_solver_values_that_make_every_step_nan_fail_before_any_job(
        spark, df, solver, params, match):
    """Hardening round 2, item 4: Caffe checks none of these, and every step was NaN, then
    blamed on base_lr after round 1. The baseLr param's value is the schedule's base_lr."""
    fails_before_any_job(spark, df, tiny(solverPrototxt=solver, **params), ValueError, match)


def test_handle_invalid_keep_is_for_transform_only(spark, df, model):
    """Hardening round 2, item 5: a fit cannot train on NaN; the model takes 'keep'."""
    fails_before_any_job(spark, df, tiny(handleInvalid="keep"), ValueError,
                         "handleInvalid='keep' is for transform .*: a fit cannot train on null "
                         "or NaN/Inf values; set 'error' or 'skip' to fit, and 'keep' on the model")
    assert model.copy().setHandleInvalid("keep").getHandleInvalid() == "keep"


def test_negative_seeds_train(df):
    """pyspark's default seed, a hash of the class name, is negative about half the time."""
    assert tiny(seed=-5).fit(df).history["samples"].iloc[0] > 0


@pytest.mark.parametrize("name", ["syncInterval", "batchSize", "numWorkers", "baseLr"])
def test_non_positive_params_fail_when_set(spark, name):
    with no_spark_job(spark), pytest.raises(TypeError, match=f'param "{name}". must be a '
                                                             "positive"):
        tiny(**{name: 0})


def test_caps_fail_at_fit(spark, df, tmp_path):
    big_text = TINY_NET + "#" * MAX_PROTOTXT_BYTES
    fails_before_any_job(spark, df, tiny(netPrototxt=big_text), ValueError,
                         "NetParameter text: .* over the 16777216 bytes cap")
    huge_input = TINY_NET.replace("dim: 8 dim: 1 dim: 4 dim: 4", "dim: 8 dim: 1 dim: 8192 "
                                                                "dim: 8192")
    fails_before_any_job(spark, df, tiny(netPrototxt=huge_input), ValueError,
                         r"layer 'data' \(Input\): shape \[8, 1, 8192, 8192\] has 536870912 "
                         "elements, over the 268435456 cap")
    fails_before_any_job(spark, df, tiny(inputShape=[3, 512, 512], batchSize=2048), ValueError,
                         r"batchSize=2048 x inputShape=\[3, 512, 512\] x 4 bytes")
    huge = tmp_path / "huge.caffemodel"
    with open(huge, "wb") as f:
        f.truncate(MAX_CAFFEMODEL_BYTES + 1)  # sparse
    fails_before_any_job(spark, df, weights_from(huge), ValueError,
                         "huge.caffemodel: 2147483649 bytes, over the 2147483648 bytes cap")


def _pycaffe_caffemodel(tmp_path, layer):
    """A caffemodel written by pycaffe's ``Net.save`` for a 1x4x4 input and ``layer``."""
    import caffe
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text('layer { name: "data" type: "Input" top: "data" '
                      'input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\n' + layer)
    path = str(tmp_path / "weights.caffemodel")
    caffe.Net(str(deploy), caffe.TEST).save(path)
    return path


def test_initial_weights_that_do_not_fit_the_net_fail_before_any_job(spark, df, tmp_path):
    wrong_shape = _pycaffe_caffemodel(tmp_path, 'layer { name: "ip" type: "InnerProduct" '
                                                'bottom: "data" top: "ip" '
                                                'inner_product_param { num_output: 5 } }')
    fails_before_any_job(spark, df, weights_from(wrong_shape), ValueError,
                         r"layer 'ip': blob 0 of the weights has shape \[5, 16\], the net's "
                         r"is \[3, 16\]")
    unrelated = _pycaffe_caffemodel(tmp_path, 'layer { name: "other" type: "InnerProduct" '
                                              'bottom: "data" top: "o" '
                                              'inner_product_param { num_output: 3 } }')
    fails_before_any_job(spark, df, weights_from(unrelated), ValueError,
                         r"no layer of the caffemodel \(other\) is a learnable layer of the "
                         r"net \(ip\)")


def test_truncated_caffemodel_fails_before_any_job(spark, df, model, tmp_path):
    model.saveCaffeModel(str(tmp_path))
    data = (tmp_path / "weights.caffemodel").read_bytes()
    tuned = weights_from(tmp_path / "weights.caffemodel").fit(df)  # the intact one
    assert tuned.weights.keys() == model.weights.keys()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[:len(data) // 2])
    fails_before_any_job(spark, df, weights_from(cut), ValueError,
                         "cut.caffemodel: not a caffemodel .truncated or corrupt.")


def test_initial_weights_are_checked_before_counting_partitions(spark, df, tmp_path):
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(b"\x0a\xff")
    fresh = df.repartition(3)  # a shuffle not run yet
    fails_before_any_job(spark, fresh, tiny(initialWeights=str(cut)), ValueError,
                         "not a caffemodel")


def _edit_metadata(path, **changes):
    """Rewrite a saved stage's metadata JSON (and drop Hadoop's checksums of it)."""
    part, = glob.glob(os.path.join(path, "metadata", "part-*"))
    with open(part) as f:
        metadata = json.load(f)
    for key, value in changes.items():
        if key == "paramMap":
            metadata["paramMap"].update(value)
        else:
            metadata[key] = value
    with open(part, "w") as f:
        json.dump(metadata, f)
    for crc in glob.glob(os.path.join(path, "metadata", ".*.crc")):
        os.remove(crc)


@pytest.fixture
def saved(model, tmp_path):
    path = str(tmp_path / "saved")
    model.write().save(path)
    return path


def test_load_refuses_metadata_naming_another_class(saved):
    _edit_metadata(saved, **{"class": "sparknet_ml.estimators.estimator.SparkNetEstimator"})
    with pytest.raises(ValueError, match="holds a 'sparknet_ml.estimators.estimator."
                                         "SparkNetEstimator', not a 'sparknet_ml.estimators."
                                         "model.SparkNetModel'"):
        SparkNetModel.load(saved)
    for name in ("no_such_module_sparknet.Evil", "os.system"):
        _edit_metadata(saved, **{"class": name})
        with pytest.raises(ValueError, match=f"holds a '{name}', not a"):  # not ImportError
            SparkNetModel.load(saved)
    assert "no_such_module_sparknet" not in sys.modules


@pytest.mark.parametrize("name", ["model.json", "deploy.prototxt", "weights.caffemodel"])
def test_load_refuses_model_files_that_resolve_outside_the_directory(saved, tmp_path, name):
    target = os.path.join(saved, "model", name)
    outside = str(tmp_path / f"outside-{name}")
    shutil.move(target, outside)  # intact content, wrong place
    os.symlink(outside, target)
    with pytest.raises(ValueError, match=f"model/{name} is a link or resolves outside "
                                         f"{saved}; refusing to read it"):
        SparkNetModel.load(saved)
    os.remove(target)
    os.symlink("/etc/passwd", target)
    with pytest.raises(ValueError, match=f"model/{name} is a link or resolves outside"):
        SparkNetModel.load(saved)


def test_load_refuses_a_model_directory_symlinked_elsewhere(saved, tmp_path):
    shutil.move(os.path.join(saved, "model"), str(tmp_path / "elsewhere"))
    os.symlink(str(tmp_path / "elsewhere"), os.path.join(saved, "model"))
    with pytest.raises(ValueError, match="model/model.json is a link or resolves outside"):
        SparkNetModel.load(saved)


@pytest.mark.parametrize("text, message", [
    ("{not json", "model/model.json is damaged \\(not JSON"),
    ('{"layers": {}}', "model/model.json is damaged: it lacks output_blob, .*scale"),
])
def test_load_names_a_damaged_model_json(saved, text, message):
    """Hardening issue, item 14: a bare JSONDecodeError or KeyError 'scale'."""
    with open(os.path.join(saved, "model", "model.json"), "w") as f:
        f.write(text)
    with pytest.raises(ValueError, match=message):
        SparkNetModel.load(saved)


@pytest.mark.parametrize("blobs, difference", [
    ({"ip": [np.zeros((4, 16)), np.zeros(4)]},
     "layer 'ip' blob 0 has shape [4, 16] in weights.caffemodel, [3, 16] in model.json"),
    ({"ip": [np.zeros((3, 16))]}, "layer 'ip' blob 1 is in model.json only"),
    ({"ip": [np.zeros((3, 16)), np.zeros(3)], "extra": [np.zeros(2)]},
     "layer 'extra' is in weights.caffemodel only"),
    ({}, "layer 'ip' is in model.json only"),
])
def test_load_names_the_first_blob_where_the_caffemodel_and_model_json_differ(
        saved, blobs, difference):
    """Hardening round 2, item 9: a caffemodel of another net was reported as
    ``does not match model.json: layers ['ip'] vs ['ip']``."""
    from caffe.proto import caffe_pb2
    from sparknet_ml.persistence.caffemodel import caffemodel_bytes
    net = caffe_pb2.NetParameter()
    for name in blobs:
        net.layer.add(name=name)
    with open(os.path.join(saved, "model", "weights.caffemodel"), "wb") as f:
        f.write(caffemodel_bytes(net, blobs))
    with pytest.raises(ValueError) as refused:
        SparkNetModel.load(saved)
    assert str(refused.value) == (f"{saved}/model/weights.caffemodel does not match model.json: "
                                  f"{difference}")


def test_load_says_a_missing_model_folder_is_missing(saved):
    """Hardening issue, item 14: it was reported as "refusing to read it"."""
    shutil.rmtree(os.path.join(saved, "model"))
    with pytest.raises(ValueError, match="cannot read .*/saved/model/model.json: no such file "
                                         "or folder"):
        SparkNetModel.load(saved)


def test_load_follows_a_symlink_to_the_whole_model(saved, model, tmp_path):
    link = str(tmp_path / "link")
    os.symlink(saved, link)
    loaded = SparkNetModel.load(link)
    assert loaded.uid == model.uid
    np.testing.assert_array_equal(loaded.weights["ip"][0], model.weights["ip"][0])


def test_load_refuses_a_prototxt_param_that_names_a_file(saved):
    _edit_metadata(saved, paramMap={"netPrototxt": "/etc/passwd"})
    with pytest.raises(ValueError, match="param netPrototxt names the file '/etc/passwd'"):
        SparkNetModel.load(saved)


def test_save_over_an_existing_path_needs_overwrite(model, saved, tmp_path):
    with pytest.raises(ValueError, match=r"saved already exists; use write\(\)\.overwrite\(\)"):
        model.write().save(saved)
    with pytest.raises(ValueError, match="already exists"):
        tiny().write().save(saved)
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "photo.jpg").write_bytes(b"mine")
    with pytest.raises(ValueError, match="stranger already exists"):
        model.write().save(str(tmp_path / "stranger"))
    with pytest.raises(ValueError, match="stranger exists and is not a saved"):
        model.write().overwrite().save(str(tmp_path / "stranger"))
    assert (tmp_path / "stranger" / "photo.jpg").read_bytes() == b"mine"
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose
    model.write().save(str(tmp_path / "empty"))
    model.write().overwrite().save(saved)
    assert SparkNetModel.load(saved).uid == model.uid


def test_a_saved_model_with_a_python_layer_is_refused_at_transform(spark, tmp_path):
    from sparknet_ml import SparkNetModel
    from sparknet_ml.net import NetSpecError
    model = SparkNetModel._create(weights={}, deploy_text=(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }\n'
        'layer { name: "evil" type: "Python" bottom: "data" top: "out" '
        'python_param { module: "os" layer: "system" } }\n'), output_blob="out",
        classification=False, data_top="data", history=[], scale=1.0, mean=[],
        input_shape=[4])
    df = spark.createDataFrame([([1.0, 2.0, 3.0, 4.0],)], "features array<double>")
    with no_spark_job(spark), pytest.raises(NetSpecError, match="'evil'.*Python"):
        model.transform(df)
