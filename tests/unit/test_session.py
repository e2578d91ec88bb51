"""What the driver asks of a session, from its settings (the Connect answers; a classic
session asks its JVM and is covered by the Spark tests)."""
import pytest

from sparknet_ml.driver import session


class ConnectLike:
    """A Spark Connect session's settings (``spark.conf.get(key, None)``), nothing else."""

    __module__ = "pyspark.sql.connect.session"

    def __init__(self, **settings):
        self.conf = self
        self._settings = {key.replace("_", "."): value for key, value in settings.items()}

    def get(self, key, default=None):
        return self._settings.get(key, default)


def test_sizes_in_spark_units():
    assert session.size_bytes("512m") == 512 * 2 ** 20
    assert session.size_bytes("134217728b") == 128 * 2 ** 20
    assert session.size_bytes("1G") == 2 ** 30
    with pytest.raises(ValueError, match="'lots' is not a size"):
        session.size_bytes("lots")


def test_connect_answers_come_from_the_settings():
    spark = ConnectLike(spark_master="local[3,4]")
    assert session.is_connect(spark) and session.is_local(spark)
    assert session.max_task_failures(spark) == 4 and session.task_slots(spark) == 3
    assert session.registration_wait(spark) == 0.0
    assert session.plan_bytes(spark) == 128 * 2 ** 20
    cluster = ConnectLike(spark_master="local-cluster[2,3,1024]", spark_task_cpus="1")
    assert session.task_slots(cluster) == 6 and session.max_task_failures(cluster) == 4
    assert session.registration_wait(cluster) == 30.0
    yarn = ConnectLike(spark_master="yarn", spark_executor_instances="4",
                       spark_executor_cores="2", spark_task_maxFailures="8",
                       spark_scheduler_maxRegisteredResourcesWaitingTime="500ms")
    assert session.task_slots(yarn) == 8 and session.max_task_failures(yarn) == 8
    assert session.registration_wait(yarn) == 0.5
    assert session.task_slots(ConnectLike(spark_master="yarn")) is None  # not stated
