"""The driver's side of the training blocks (:mod:`sparknet_ml.tasks.blocks`): one job converts
the DataFrame into one block per worker partition and caches their handles; the handles
say, before round 1, whether the data can train the net."""
from __future__ import annotations

import functools

from ..tasks.blocks import (HANDLES_SCHEMA, ROWS_SCHEMA, BlockHandle, InputSpec, drop_blocks,
                            handles_of, store_block, to_rows)
from . import session


def column(name: str):
    """The DataFrame column named ``name``, taken literally: a dot in it does not reach into a
    struct (``F.col("img.pixels")`` would), backticks are escaped. Needs an active session."""
    from pyspark.sql import functions as F
    return F.col("`" + name.replace("`", "``") + "`")


def cache_blocks(df, spec: InputSpec, num_workers: int, fit_id: str):
    """Convert ``df`` once into one block per worker partition.

    This job is also the validation pass over the data: a feature of the wrong length fails
    it with a ValueError naming the column; the returned handles count the invalid rows
    dropped and give the label range.

    Returns
    -------
    handles : DataFrame of :data:`~sparknet_ml.tasks.blocks.HANDLES_SCHEMA`, cached
    summary : list of BlockHandle
        The handles themselves, collected (small): rows, invalid rows, label range.
    """
    from pyspark.errors import PythonException
    if session.partitions(df) != num_workers:
        df = df.repartition(num_workers)
    # to_rows reads the columns by position: pyspark's mapInArrow cannot take a DataFrame
    # whose column names hold dots, so they go in as c0, c1
    selected = [spec.features_col] + ([spec.label_col] if spec.label_col else [])
    handles = (df.select(*[column(name).alias(f"c{i}") for i, name in enumerate(selected)])
               .mapInArrow(functools.partial(to_rows, spec=spec), ROWS_SCHEMA)
               .mapInArrow(functools.partial(store_block, input_shape=spec.input_shape,
                                             fit_id=fit_id, ignore_label=spec.ignore_label),
                           HANDLES_SCHEMA)
               .cache())
    try:
        summary = handles_of(handles.toArrow().to_batches())
    except PythonException as err:  # surface our own ValueError, not a Python traceback
        message = str(err)
        if "ValueError: " not in message:
            raise
        raise ValueError(message.split("ValueError: ")[-1].strip().splitlines()[0]) from None
    return handles, sorted(summary, key=lambda h: h.partition)


def release_blocks(handles) -> None:
    """Delete the blocks' files (a best-effort job) and uncache their handles."""
    handles.mapInArrow(drop_blocks, "partition long").toArrow()
    handles.unpersist()


def check_summary(summary: list[BlockHandle], spec: InputSpec, handle_invalid: str,
                  classes: int | None) -> None:
    """The driver's verdict on the validation pass, before round 1.

    Parameters
    ----------
    summary : list of BlockHandle
        What the caching job found in every partition.
    handle_invalid : {"error", "skip"}
        Whether rows with null or NaN/Inf values stop the fit or were dropped for good.
    classes : int or None
        Outputs of a classification net (labels must be integers in [0, classes)); None for
        other nets.
    """
    invalid = sum(h.invalid for h in summary)
    if invalid and handle_invalid == "error":
        raise ValueError(f"{invalid} rows have a null or NaN/Inf value in {spec.features_col!r} "
                         f"or {spec.label_col!r}; clean them or set handleInvalid='skip'")
    filled = [h for h in summary if h.rows]
    if not filled:
        raise ValueError("the DataFrame has no rows to train on"
                         + (f" ({invalid} invalid rows skipped)" if invalid else ""))
    if classes is None:
        return
    fractional = sum(h.fractional_labels for h in filled)
    if fractional:
        raise ValueError(f"label column {spec.label_col!r}: {fractional} labels are not "
                         "integers; a classification net needs class indices")
    low, high = min(h.label_min for h in filled), max(h.label_max for h in filled)
    if low < 0 or high >= classes:
        raise ValueError(f"label column {spec.label_col!r} ranges over [{low:g}, {high:g}] but "
                         f"the net has {classes} outputs: labels must be in [0, {classes - 1}]")
