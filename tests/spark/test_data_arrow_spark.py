"""sparknet_ml.data.arrow inside real mapInArrow workers (Spark 4.3, local[2]).

Worker functions are defined inside the tests so that cloudpickle ships them by value: the
workers import ``sparknet_ml`` but not the ``tests`` package.
"""
import struct
import zlib

import numpy as np
import pytest
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.linalg import DenseVector, Vectors, VectorUDT
from pyspark.sql.types import (ArrayType, BinaryType, DoubleType, FloatType, IntegerType,
                               LongType, StringType, StructField, StructType)

from sparknet_ml.data import fashion_mnist

def features_job(df, key, column, input_shape, key_type=LongType()):
    """Run features_to_array on ``column`` in the workers; return {key: flat float32 row}."""
    def fn(batches):
        import pyarrow as pa
        from sparknet_ml.data.arrow import arrays_to_arrow, features_to_array
        for batch in batches:
            x = features_to_array(batch.column(column), input_shape, name=column)
            assert x.dtype == np.float32 and x.shape[1:] == tuple(input_shape)
            yield pa.RecordBatch.from_arrays(
                [batch.column(key), arrays_to_arrow(x.reshape(len(x), -1))], names=["id", "x"])
    schema = StructType([StructField("id", key_type), StructField("x", ArrayType(FloatType()))])
    return {r.id: np.array(r.x, np.float32) for r in df.mapInArrow(fn, schema).collect()}


def test_vector_column_dense_and_sparse(spark):
    rows = [(0, Vectors.dense([1.5, 2.0, 0.0, -4.0])), (1, Vectors.sparse(4, [1, 3], [7.0, 8.5])),
            (2, Vectors.sparse(4, [], [])), (3, Vectors.dense([0.1, 0.2, 0.3, 0.4])),
            (4, Vectors.sparse(4, [0], [-2.0]))]
    df = spark.createDataFrame(rows, StructType([StructField("id", LongType()),
                                                 StructField("v", VectorUDT())]))
    got = features_job(df, "id", "v", [2, 2])
    for i, vector in rows:
        np.testing.assert_array_equal(got[i], vector.toArray().astype(np.float32))


def test_array_and_binary_columns(spark):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    u8 = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)
    schema = StructType([StructField("id", LongType()), StructField("a", ArrayType(DoubleType())),
                         StructField("f32", BinaryType()), StructField("u8", BinaryType())])
    df = spark.createDataFrame(
        [(i, x[i].astype(float).tolist(), bytearray(x[i].astype("<f4").tobytes()),
          bytearray(u8[i].tobytes())) for i in range(6)], schema)
    for column, expected in (("a", x), ("f32", x), ("u8", u8.astype(np.float32))):
        got = features_job(df, "id", column, [3])
        np.testing.assert_array_equal(np.stack([got[i] for i in range(6)]), expected)


def _write_png(path, rgb):
    """Write an 8-bit RGB PNG with the standard library (pillow is not a dependency)."""
    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_image_data_source_gives_chw_bgr(spark, tmp_path):
    rng = np.random.default_rng(4)
    images = {f"img{i}.png": rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
              for i in range(3)}
    for name, rgb in images.items():
        _write_png(tmp_path / name, rgb)
    df = spark.read.format("image").load(str(tmp_path)).selectExpr("image.origin AS origin",
                                                                   "image")
    got = features_job(df, "origin", "image", [3, 4, 5], key_type=StringType())
    assert len(got) == 3
    for origin, flat in got.items():
        rgb = images[origin.rsplit("/", 1)[-1]]
        bgr_chw = rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
        np.testing.assert_array_equal(flat.reshape(3, 4, 5), bgr_chw)


def test_wrong_shape_error_reaches_driver(spark):
    df = spark.createDataFrame([(0, [1.0, 2.0])], "id long, a array<double>")
    with pytest.raises(Exception, match=r"a: row 0 has 2 values, expected 3"):
        features_job(df, "id", "a", [3])


def test_vectors_to_arrow_reads_back_as_dense_vectors(spark):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5], [0.6, 0.3, 0.1]])
    labels = [0.0, 1.0, 2.0, 1.0]
    df = spark.createDataFrame(list(enumerate(labels)), "id long, label double").coalesce(1)

    def fn(batches):
        import pyarrow as pa
        from sparknet_ml.data.arrow import vectors_to_arrow
        for batch in batches:
            rows = batch.column("id").to_numpy()
            p = probs[rows]
            yield pa.RecordBatch.from_arrays(
                [batch.column("id"), batch.column("label"), pa.array(p.argmax(1).astype(float)),
                 vectors_to_arrow(p)], names=["id", "label", "prediction", "probability"])
    schema = StructType([StructField("id", LongType()), StructField("label", DoubleType()),
                         StructField("prediction", DoubleType()),
                         StructField("probability", VectorUDT())])
    scored = df.mapInArrow(fn, schema)
    rows = sorted(scored.collect())
    assert all(type(r.probability) is DenseVector for r in rows)
    np.testing.assert_array_equal(np.stack([r.probability.toArray() for r in rows]), probs)
    log_loss = MulticlassClassificationEvaluator(metricName="logLoss").evaluate(scored)
    assert log_loss == pytest.approx(-np.mean(np.log(probs[np.arange(4), np.array(labels, int)])))
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(scored)
    assert accuracy == pytest.approx(0.75)


def test_fashion_mnist_vectors_round_trip_exactly(spark):
    images, labels = fashion_mnist.load("test")
    images, labels = images[:200], labels[:200]
    df = spark.createDataFrame(
        [(i, Vectors.dense(images[i].ravel().astype(float)), int(labels[i])) for i in range(200)],
        StructType([StructField("id", LongType()), StructField("features", VectorUDT()),
                    StructField("label", IntegerType())]))

    def fn(batches):
        import pyarrow as pa
        from sparknet_ml.data.arrow import features_to_array, labels_to_array, vectors_to_arrow
        for batch in batches:
            x = features_to_array(batch.column("features"), [1, 28, 28])
            y = labels_to_array(batch.column("label"))
            yield pa.RecordBatch.from_arrays(
                [batch.column("id"), vectors_to_arrow(x.reshape(len(x), -1)), pa.array(y)],
                names=["id", "pixels", "y"])
    schema = StructType([StructField("id", LongType()), StructField("pixels", VectorUDT()),
                         StructField("y", FloatType())])
    rows = sorted(df.mapInArrow(fn, schema).collect())
    assert [r.id for r in rows] == list(range(200))
    pixels = np.stack([r.pixels.toArray() for r in rows])
    np.testing.assert_array_equal(pixels.reshape(200, 28, 28), images.astype(np.float64))
    np.testing.assert_array_equal([r.y for r in rows], labels.astype(np.float32))
