"""DataFrame columns <-> float32 tensors through Arrow, for Spark's ``mapInArrow`` workers.

Pure pyarrow + numpy (no Spark import): the functions run inside Spark's Python workers and in
unit tests with hand-built Arrow arrays.

Layouts Spark 4.3 uses in ``mapInArrow`` (measured):

- ``VectorUDT`` in: its sqlType as ``struct<type: int8 not null, size: int32, indices:
  list<element: int32 not null>, values: list<element: double not null>>``; dense rows have
  ``type`` 1, ``size`` and ``indices`` null; sparse rows have ``type`` 0.
- ``VectorUDT`` out: the same struct. Spark reads the children by position, needs 32-bit list
  offsets and double values (``large_list``, ``fixed_size_list`` or float values fail).
- ``array<float>`` / ``array<double>``: ``list<element: float|double>``; ``binary``: ``binary``.
- Image struct (``spark.read.format("image")``): ``struct<origin: string, height: int32,
  width: int32, nChannels: int32, mode: int32, data: binary>``, ``data`` HWC uint8, BGR.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INT32_MAX = np.iinfo(np.int32).max
_VECTOR_TYPE = pa.struct([
    pa.field("type", pa.int8(), nullable=False),
    pa.field("size", pa.int32()),
    pa.field("indices", pa.list_(pa.field("element", pa.int32(), nullable=False))),
    pa.field("values", pa.list_(pa.field("element", pa.float64(), nullable=False))),
])
_IMAGE_FIELDS = {"height", "width", "nChannels", "data"}


def features_to_array(column, input_shape, *, name: str = "features",
                      pixels: bool = False, resize: bool = False) -> np.ndarray:
    """Convert a feature column to a float32 tensor.

    Parameters
    ----------
    column : pyarrow.Array or pyarrow.ChunkedArray
        A ``VectorUDT`` struct (dense and sparse rows), a list of numbers (``array<float>``,
        ``array<double>``; list, large_list or fixed_size_list), ``binary`` (each value raw
        little-endian float32 or uint8, decided from the byte length) or Spark's image struct.
    input_shape : sequence of int
        Shape of one example; ``(channels, height, width)`` for images.
    name : str
        Column name used in error messages.
    pixels : bool
        Return uint8 where the column holds bytes (uint8 binaries, images), a quarter of the
        memory; the data transform turns them into float32 batch by batch.
    resize : bool
        Resize images of another height and width to ``input_shape`` (bilinear, as Caffe's
        ImageData ``new_height``/``new_width``); their channels must match.

    Returns
    -------
    ndarray of float32, shape ``(n, *input_shape)``, C-contiguous
        Images come out CHW with BGR channel order kept, values 0..255; so do uint8 binaries.

    Raises
    ------
    ValueError
        On nulls, an unsupported type, or a row whose length or image size does not match
        ``input_shape``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> features_to_array(pa.array([[1.0, 2.0], [3.0, 4.0]]), [2]).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    arr = _combine(column)
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) <= 0:
        raise ValueError(f"{name}: input_shape must be positive integers, not {list(input_shape)}")
    size = int(np.prod(shape))
    kind = _feature_kind(arr.type, name)
    _check_no_nulls(arr, name, "feature")
    if len(arr) == 0:
        return np.zeros((0, *shape), np.float32)
    if kind == "vector":
        flat = _vector_rows(arr, size, name)
    elif kind == "list":
        flat = _list_rows(arr, size, name, np.arange(len(arr)))
    elif kind == "binary":
        flat = _binary_rows(arr, size, name, pixels)
    else:
        return _image_rows(arr, shape, name, pixels, resize)
    return flat.reshape((len(arr), *shape))


def labels_to_array(column, name: str = "label") -> np.ndarray:
    """Convert an integer, floating-point or decimal label column to float32 of shape ``(n,)``.

    Raises
    ------
    ValueError
        On a non-numeric type or a null label.

    Examples
    --------
    >>> import pyarrow as pa
    >>> labels_to_array(pa.array([0, 3], pa.int32())).tolist()
    [0.0, 3.0]
    """
    arr = _combine(column)
    if pa.types.is_decimal(arr.type):  # Spark's DecimalType
        arr = pc.cast(arr, pa.float64())
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        raise ValueError(f"{name}: labels must be integers or floats, not {arr.type}")
    _check_no_nulls(arr, name, "label")
    return arr.to_numpy(zero_copy_only=False).astype(np.float32)


def vectors_to_arrow(values: np.ndarray) -> pa.Array:
    """Build a column that Spark reads as dense ``VectorUDT`` values.

    Declare the field as ``VectorUDT()`` in the ``mapInArrow`` output schema.

    Parameters
    ----------
    values : array-like, shape (n, k)

    Returns
    -------
    pyarrow.StructArray
        ``struct<type: int8, size: int32, indices: list<int32>, values: list<double>>`` with
        ``type`` 1 and null ``size``/``indices``, as Spark itself writes dense vectors.
    """
    values = _matrix(values, np.float64)
    n, k = values.shape
    dense_values = pa.ListArray.from_arrays(_offsets(n, k), pa.array(values.ravel()),
                                            type=_VECTOR_TYPE.field("values").type)
    children = [pa.array(np.ones(n, np.int8)), pa.nulls(n, pa.int32()),
                pa.nulls(n, _VECTOR_TYPE.field("indices").type), dense_values]
    return pa.StructArray.from_arrays(children, fields=list(_VECTOR_TYPE))


def arrays_to_arrow(values: np.ndarray) -> pa.Array:
    """Build a ``list<float32>`` column (Spark ``array<float>``) from an ``(n, k)`` array."""
    values = _matrix(values, np.float32)
    n, k = values.shape
    return pa.ListArray.from_arrays(_offsets(n, k), pa.array(values.ravel()))


def _combine(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _feature_kind(dtype: pa.DataType, name: str) -> str:
    if pa.types.is_struct(dtype):
        names = {dtype.field(i).name for i in range(dtype.num_fields)}
        if {"type", "size", "indices", "values"} <= names:
            return "vector"
        if _IMAGE_FIELDS <= names:
            return "image"
    elif (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)
          or pa.types.is_fixed_size_list(dtype)):
        if (pa.types.is_integer(dtype.value_type) or pa.types.is_floating(dtype.value_type)
                or pa.types.is_decimal(dtype.value_type)):
            return "list"
    elif (pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype)
          or pa.types.is_fixed_size_binary(dtype)):
        return "binary"
    raise ValueError(f"{name}: unsupported feature type {dtype}; expected a Vector, "
                     "array<float|double>, binary or image struct column")


def _check_no_nulls(arr: pa.Array, name: str, what: str) -> None:
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{name}: null {what} at row {row}")


def _lengths(arr: pa.Array) -> np.ndarray:
    """Per-row lengths of a list or binary array (0 for nulls)."""
    binary = pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)
    lengths = (pc.binary_length if binary else pc.list_value_length)(arr)
    return pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False)


def _list_rows(lists: pa.Array, size: int, name: str, rows: np.ndarray) -> np.ndarray:
    """Rows of a list array as float32 ``(m, size)``; ``rows`` are their indices in the column."""
    lengths = _lengths(lists)
    bad = np.flatnonzero(lengths != size)
    if bad.size:
        i = bad[0]
        raise ValueError(f"{name}: row {rows[i]} has {lengths[i]} values, expected {size}")
    flat = lists.flatten()
    if flat.null_count:
        pos = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{name}: null value inside the feature at row {rows[pos // size]}")
    if pa.types.is_decimal(flat.type):  # Spark's array<decimal>
        flat = pc.cast(flat, pa.float64())
    return flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, size)


def _vector_rows(arr: pa.StructArray, size: int, name: str) -> np.ndarray:
    kind = arr.field("type").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((kind != 0) & (kind != 1))
    if bad.size:
        raise ValueError(f"{name}: row {bad[0]} is not a Vector (type {kind[bad[0]]})")
    dense = np.flatnonzero(kind == 1)
    if dense.size == len(arr):
        return _list_rows(arr.field("values"), size, name, dense)
    out = np.zeros((len(arr), size), np.float32)
    if dense.size:
        out[dense] = _list_rows(arr.field("values").take(dense), size, name, dense)
    sparse = np.flatnonzero(kind == 0)
    sub = arr.take(sparse)
    sizes = pc.fill_null(sub.field("size"), -1).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(sizes != size)
    if bad.size:
        raise ValueError(f"{name}: row {sparse[bad[0]]} is a sparse vector of size "
                         f"{sizes[bad[0]]}, expected {size}")
    nnz = _lengths(sub.field("indices"))
    bad = np.flatnonzero(nnz != _lengths(sub.field("values")))
    if bad.size:
        raise ValueError(f"{name}: row {sparse[bad[0]]} has different numbers of indices "
                         "and values")
    index = sub.field("indices").flatten().to_numpy(zero_copy_only=False)
    rows = np.repeat(sparse, nnz)
    bad = np.flatnonzero((index < 0) | (index >= size))
    if bad.size:
        raise ValueError(f"{name}: row {rows[bad[0]]} has index {index[bad[0]]} outside "
                         f"0..{size - 1}")
    out[rows, index] = sub.field("values").flatten().to_numpy(zero_copy_only=False)
    return out


def _bytes_rows(arr: pa.Array, name: str, width: int, what: str) -> np.ndarray:
    """Binary values of ``width`` bytes each, as a read-only uint8 ``(n, width)`` view."""
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type):
        if arr.type.byte_width != width:
            raise ValueError(f"{name}: row 0 has {arr.type.byte_width} bytes, expected {what}")
        start = arr.offset * width
    else:
        lengths = _lengths(arr)
        bad = np.flatnonzero(lengths != width)
        if bad.size:
            raise ValueError(f"{name}: row {bad[0]} has {lengths[bad[0]]} bytes, expected {what}")
        itemsize = 8 if pa.types.is_large_binary(arr.type) else 4
        start = int(np.frombuffer(arr.buffers()[1], f"<i{itemsize}", count=1,
                                  offset=arr.offset * itemsize)[0])
    data = np.frombuffer(arr.buffers()[-1], np.uint8)
    return data[start:start + n * width].reshape(n, width)


def _binary_rows(arr: pa.Array, size: int, name: str, pixels: bool = False) -> np.ndarray:
    first = (arr.type.byte_width if pa.types.is_fixed_size_binary(arr.type)
             else len(arr[0].as_py()))
    what = f"{size} (uint8) or {4 * size} (float32) like row 0"
    if first == 4 * size:
        return _bytes_rows(arr, name, first, what).view("<f4").astype(np.float32)
    if first == size:
        rows = _bytes_rows(arr, name, first, what)
        return rows if pixels else rows.astype(np.float32)
    raise ValueError(f"{name}: row 0 has {first} bytes, expected {size} (uint8) or "
                     f"{4 * size} (float32)")


def _image_rows(arr: pa.StructArray, shape: tuple, name: str, pixels: bool = False,
                resize: bool = False) -> np.ndarray:
    if len(shape) != 3:
        raise ValueError(f"{name}: an image column needs input_shape (channels, height, width), "
                         f"not {list(shape)}")
    c, h, w = shape
    dims = [arr.field(f).to_numpy(zero_copy_only=False) for f in ("nChannels", "height", "width")]
    if resize and (dims[0] == c).all():
        return _resized_rows(arr, dims, shape, name, pixels)
    bad = np.flatnonzero((dims[0] != c) | (dims[1] != h) | (dims[2] != w))
    if bad.size:
        i = bad[0]
        raise ValueError(f"{name}: image at row {i} is {dims[0][i]}x{dims[1][i]}x{dims[2][i]} "
                         f"(channels x height x width), expected {c}x{h}x{w}")
    hwc = _bytes_rows(arr.field("data"), name, c * h * w, f"{c * h * w} (uint8 HWC)")
    return np.ascontiguousarray(hwc.reshape(-1, h, w, c).transpose(0, 3, 1, 2),
                                np.uint8 if pixels else np.float32)


def _resized_rows(arr: pa.StructArray, dims, shape: tuple, name: str,
                  pixels: bool) -> np.ndarray:
    """Images of any height and width resized to ``shape`` (C, H, W), CHW."""
    from .images import resize_bilinear
    c, h, w = shape
    data = arr.field("data")
    out = np.empty((len(arr), c, h, w), np.uint8)
    for i in range(len(arr)):
        height, width = int(dims[1][i]), int(dims[2][i])
        hwc = np.frombuffer(data[i].as_py(), np.uint8)
        if hwc.size != height * width * c:
            raise ValueError(f"{name}: image at row {i} has {hwc.size} bytes, not "
                             f"{height}x{width}x{c}")
        out[i] = resize_bilinear(hwc.reshape(height, width, c), h, w).transpose(2, 0, 1)
    return out if pixels else out.astype(np.float32)


def _matrix(values, dtype) -> np.ndarray:
    values = np.ascontiguousarray(values, dtype)
    if values.ndim != 2:
        raise ValueError(f"expected an (n, k) array, got shape {values.shape}")
    return values


def _offsets(n: int, k: int) -> pa.Array:
    if n * k > _INT32_MAX:
        raise ValueError(f"{n}x{k} values exceed Arrow's 32-bit list offsets that Spark reads")
    return pa.array((np.arange(n + 1, dtype=np.int64) * k).astype(np.int32))
