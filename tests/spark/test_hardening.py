"""Cases of the hardening issue that need a fit on local[2] (the others are unit tests)."""
import numpy as np
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetEstimator, SparkNetModel, zoo  # noqa: E402
from sparknet_ml.data import fashion_mnist  # noqa: E402

LENET = zoo.prototxt("lenet_train_test")
AUX_HEAD = """
layer { name: "aux_ip" type: "InnerProduct" bottom: "pool2" top: "aux_ip" include { phase: TRAIN }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_ip" bottom: "label" top: "aux_loss"
  loss_weight: 0.3 include { phase: TRAIN } }
"""
AUX_CONV = """
layer { name: "aux_conv" type: "Convolution" bottom: "pool1" top: "aux_conv"
  include { phase: TRAIN } convolution_param { num_output: 4 kernel_size: 3
    weight_filler { type: "xavier" } } }
layer { name: "aux_ip" type: "InnerProduct" bottom: "aux_conv" top: "aux_ip"
  include { phase: TRAIN } inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_ip" bottom: "label" top: "aux_loss"
  loss_weight: 0.3 include { phase: TRAIN } }
"""


@pytest.fixture(scope="module")
def pictures(spark):
    images, labels = fashion_mnist.load("train")
    rows = [(bytearray(images[i].tobytes()), float(labels[i]), i % 4 == 0) for i in range(96)]
    return spark.createDataFrame(rows, "`img.pixels` binary, `y.label` double, `held.out` boolean"
                                 ).repartition(2).cache()


def lenet(net=LENET, solver=zoo.prototxt("lenet_solver"), **params):
    return SparkNetEstimator(**{
        "netPrototxt": net, "solverPrototxt": solver, "featuresCol": "img.pixels",
        "labelCol": "y.label", "inputShape": [1, 28, 28], "batchSize": 4, "syncInterval": 2,
        "maxIter": 2, "seed": 5, "showProgress": False, **params})


@pytest.mark.parametrize("head", [AUX_HEAD, AUX_CONV], ids=["aux-classifier", "aux-conv-branch"])
def test_a_train_only_learnable_layer_trains_but_is_neither_scored_nor_saved(spark, pictures,
                                                                              tmp_path, head):
    """Item 3: such a layer (GoogLeNet-style auxiliary head) made the saved model unloadable."""
    model = lenet(LENET + head).fit(pictures)
    assert "aux_ip" not in model.weights and set(model.weights) == {"conv1", "conv2", "ip1", "ip2"}
    model.write().overwrite().save(str(tmp_path / "model"))
    loaded = SparkNetModel.load(str(tmp_path / "model"))
    mine, theirs = (m.transform(pictures).select("rawPrediction").collect()
                    for m in (model, loaded))
    np.testing.assert_array_equal([r[0].toArray() for r in mine], [r[0].toArray() for r in theirs])
    import caffe
    model.saveCaffeModel(str(tmp_path / "caffe"))
    net = caffe.Net(str(tmp_path / "caffe" / "deploy.prototxt"), caffe.TEST,
                    weights=str(tmp_path / "caffe" / "weights.caffemodel"))
    np.testing.assert_array_equal(net.params["ip2"][0].data, model.weights["ip2"][0])


def test_column_names_with_dots_are_taken_literally(spark, pictures):
    """Item 11: featuresCol="img.pixels" failed with an AnalysisException; the label and the
    validation column are dotted too (a variant)."""
    model = lenet(validationCol="held.out", validationInterval=1).fit(pictures)
    assert np.isfinite(model.history["validation_accuracy"]).all()
    scored = model.transform(pictures).select("prediction").collect()
    assert len(scored) == 96 and all(0 <= r.prediction < 10 for r in scored)


def test_scoring_gets_the_fits_caps_and_caffes_own_message(spark, pictures):
    """Item 9: model.setBatchSize(10**7), or an edited deploy net, aborted the Python worker
    with only "Fatal Python error: Aborted"."""
    model = lenet().fit(pictures)
    with pytest.raises(ValueError, match="batchSize=10000000 x inputShape=\\[1, 28, 28\\]"):
        model.copy().setBatchSize(10 ** 7).transform(pictures)
    edited = model.copy()
    edited._meta = {**model._meta, "deploy_text": model._meta["deploy_text"].replace(
        "kernel_size: 5", "kernel_size: 50", 1)}
    with pytest.raises(ValueError, match="Caffe cannot build this net: .*Check failed"):
        edited.transform(pictures)


def test_an_all_false_validation_column_is_warned_about(spark, pictures, caplog):
    """Item 14: validation accuracy came out NaN without a word."""
    import logging
    from pyspark.sql import functions as F
    none_held = pictures.withColumn("held.out", F.lit(False))
    with caplog.at_level(logging.WARNING, logger="sparknet_ml"):
        model = lenet(validationCol="held.out", maxIter=1).fit(none_held)
    assert "validationCol 'held.out' marks no valid row" in caplog.text
    assert np.isnan(model.history["validation_accuracy"].iloc[-1])


def test_a_binary_file_as_net_prototxt_says_what_it_is(tmp_path):
    """Item 14: a binary NetParameter (a caffemodel) gave a bare UnicodeDecodeError."""
    path = tmp_path / "lenet.caffemodel"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TypeError, match="lenet.caffemodel is binary, not prototxt text"):
        lenet(path)
    with pytest.raises(TypeError, match="is binary, not prototxt text"):
        SparkNetEstimator().setSolverPrototxt(str(path))


def test_a_picture_as_solver_prototxt_gets_the_solvers_hint(tmp_path):
    """Hardening round 2, item 10: a PNG as solverPrototxt was told to give the net's
    .prototxt (and a caffemodel as initialWeights)."""
    picture = tmp_path / "loss.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(TypeError, match="loss.png is binary, not prototxt text .*: give the "
                                        "solver's .prototxt here"):
        SparkNetEstimator(solverPrototxt=str(picture))
    with pytest.raises(TypeError, match="give the net's .prototxt here"):
        SparkNetEstimator(netPrototxt=str(picture))


AUTOENCODER = """
name: "autoencoder"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 1 dim: 28 dim: 28 } } }
layer { name: "scaled" type: "Power" bottom: "data" top: "scaled"
  power_param { scale: 0.00390625 } }
layer { name: "flat" type: "Flatten" bottom: "scaled" top: "flat" }
layer { name: "code" type: "InnerProduct" bottom: "flat" top: "code"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
layer { name: "decode" type: "InnerProduct" bottom: "code" top: "decode"
  inner_product_param { num_output: 784 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "decode" bottom: "flat" top: "loss" }
"""


@pytest.mark.parametrize("with_label", [False, True])
def test_a_net_without_a_label_needs_no_label_column(spark, pictures, with_label):
    """Item 12: an autoencoder still demanded a label column (a variant: one is there and is
    left alone)."""
    df = pictures if with_label else pictures.drop("y.label")
    model = lenet(AUTOENCODER, 'base_lr: 0.01 lr_policy: "fixed"', outputBlobs=["code"]).fit(df)
    assert np.isfinite(model.history["loss"]).all()
    rows = model.transform(df).select("code").collect()
    assert len(rows) == 96 and len(rows[0].code) == 16


HINGE = LENET.replace('type: "SoftmaxWithLoss"', 'type: "HingeLoss"')
MULTINOMIAL = LENET.replace(
    'layer {\n  name: "loss"\n  type: "SoftmaxWithLoss"\n  bottom: "ip2"',
    'layer {\n  name: "prob"\n  type: "Softmax"\n  bottom: "ip2"\n  top: "prob"\n}\n'
    'layer {\n  name: "loss"\n  type: "MultinomialLogisticLoss"\n  bottom: "prob"')


@pytest.mark.parametrize("net", [HINGE, MULTINOMIAL], ids=["hinge", "multinomial-logistic"])
def test_class_index_losses_classify_and_check_labels(spark, pictures, net):
    """Item 4: a HingeLoss (or MultinomialLogisticLoss) net got no label range check (Caffe
    indexes by label unchecked) and its prediction was the first output, not the argmax."""
    from pyspark.sql import functions as F
    assert "HingeLoss" in net or "MultinomialLogisticLoss" in net
    shifted = pictures.withColumn("y.label", F.col("`y.label`") + 20)
    with pytest.raises(ValueError, match="ranges over \\[20, 29\\] but the net has 10 outputs"):
        lenet(net).fit(shifted)
    rows = lenet(net).fit(pictures).transform(pictures).select(
        "rawPrediction", "probability", "prediction").collect()
    raw = np.array([r.rawPrediction.toArray() for r in rows])
    np.testing.assert_array_equal([r.prediction for r in rows], raw.argmax(axis=1))
    probabilities = np.array([r.probability.toArray() for r in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    if "Multinomial" in net:  # the output is already probabilities: kept, not softmaxed
        np.testing.assert_allclose(probabilities, raw / raw.sum(axis=1, keepdims=True),
                                   rtol=1e-6)


@pytest.mark.parametrize("ignored", [255, -1])
def test_labels_equal_to_ignore_label_are_not_out_of_range(spark, pictures, ignored):
    """Item 12: ignore_label values were refused after 4 jobs (the issue's 255, and -1)."""
    from pyspark.sql import functions as F
    net = LENET.replace('  top: "loss"\n}',
                        f'  top: "loss"\n  loss_param {{ ignore_label: {ignored} }}\n}}')
    assert f"ignore_label: {ignored}" in net
    some_ignored = pictures.withColumn(
        "y.label", F.when(F.col("`held.out`"), F.lit(float(ignored))).otherwise(F.col("`y.label`")))
    model = lenet(net).fit(some_ignored)
    assert np.isfinite(model.history["loss"]).all()
    with pytest.raises(ValueError, match="ranges over"):  # other out-of-range labels still fail
        lenet(net).fit(some_ignored.withColumn("y.label", F.col("`y.label`") + 300))


def test_an_output_blob_whose_first_axis_is_not_the_batch_is_refused(spark, pictures):
    """Item 7: outputBlobs of a Reshape { dim: -1 } filled rows with other rows' values."""
    net = LENET + ('layer { name: "flat_all" type: "Reshape" bottom: "ip1" top: "flat_all" '
                   'reshape_param { shape { dim: -1 } } }\n')
    model = lenet(net).fit(pictures)
    with pytest.raises(ValueError, match="blob 'flat_all' has shape \\[2000\\]: its first axis "
                                         "is not the batch \\(4 rows\\)"):
        model.copy().setOutputBlobs(["flat_all"]).transform(pictures)
    rows = model.copy().setOutputBlobs(["ip1"]).transform(pictures).select("ip1").collect()
    assert len(rows[0].ip1) == 500  # a blob with the batch first is one array per row


@pytest.mark.parametrize("layer", ["pool1", "pool2"])
def test_a_net_caffe_cannot_run_is_refused_with_caffes_message_before_any_job(spark, pictures,
                                                                             layer):
    """Hardening round 2, item 3: ``pool: STOCHASTIC`` (no CPU implementation) passed the
    probe, which only built the net, then aborted every Python worker in round 1 with a bare
    Py4JJavaError. The probe now takes a training step with Caffe in its child process."""
    from .test_bad_input import no_spark_job
    head, _, tail = LENET.partition(f'name: "{layer}"')
    stochastic = head + f'name: "{layer}"' + tail.replace("pool: MAX", "pool: STOCHASTIC", 1)
    with no_spark_job(spark), pytest.raises(
            ValueError, match=rf"Caffe cannot run this net \(a training step on 2 examples\): "
                              rf"layer '{layer}': Not Implemented Yet"):
        lenet(stochastic).fit(pictures)


def test_a_saved_deploy_net_caffe_cannot_run_is_refused_at_transform(spark, pictures, tmp_path):
    """Item 3, scoring: a saved model whose deploy net was edited to STOCHASTIC crashed the
    scoring workers and Caffe's message was lost."""
    from .test_bad_input import no_spark_job
    path = tmp_path / "model"
    lenet().fit(pictures).write().save(str(path))
    deploy = path / "model" / "deploy.prototxt"
    deploy.write_text(deploy.read_text().replace("pool: MAX", "pool: STOCHASTIC", 1))
    model = SparkNetModel.load(str(path))
    with no_spark_job(spark), pytest.raises(
            ValueError, match=r"Caffe cannot run this net \(a forward pass on 2 examples\): "
                              r"layer 'pool1': Not Implemented Yet"):
        model.transform(pictures)
