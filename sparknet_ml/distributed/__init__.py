"""Driver side of SparkNet: blocks cached per partition, rounds of broadcast → τ local SGD
steps → weighted average."""
