"""The task side: every function Spark ships to executors (conversion into blocks, rounds,
averaging among tasks, validation, scoring) and what they keep per Python worker. Module-level
functions of their arguments alone; pure Caffe and numpy work is in :mod:`sparknet_ml.engine`."""
