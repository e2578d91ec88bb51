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


def test_states_are_sealed_when_sparks_own_traffic_is_encrypted_or_when_asked():
    """Hardening round 2, item 6: states travelled in clear even with Spark's encryption on."""
    assert not session.encrypts_states(ConnectLike())
    assert session.encrypts_states(ConnectLike(spark_network_crypto_enabled="true"))
    assert session.encrypts_states(ConnectLike(spark_ssl_enabled="true"))
    assert session.encrypts_states(ConnectLike(spark_sparknet_encryption_enabled="true"))
    assert not session.encrypts_states(ConnectLike(spark_ssl_enabled="true",
                                                   spark_sparknet_encryption_enabled="false"))


def test_crash_reports_are_turned_on_unless_the_user_set_them():
    """Item 3: a task's Caffe abort reaches the driver with glog's line."""
    class Settable(ConnectLike):
        def set(self, key, value):
            self._settings[key] = value
    spark = Settable()
    session.report_worker_crashes(spark)
    assert spark.conf.get(session.CRASH_REPORTS) == "true"
    chosen = Settable(spark_python_worker_faulthandler_enabled="false")
    session.report_worker_crashes(chosen)
    assert chosen.conf.get(session.CRASH_REPORTS) is None


class ClassicLike(ConnectLike):
    __module__ = "pyspark.sql.session"


def test_the_state_server_is_on_unless_a_connect_client_turns_it_off():
    assert session.uses_state_server(ConnectLike())
    assert not session.uses_state_server(ConnectLike(spark_sparknet_stateServer="False"))
    assert session.uses_state_server(ClassicLike(spark_sparknet_stateServer="true"))
    with pytest.raises(ValueError, match="stateServer=false is for Spark Connect clients"):
        session.uses_state_server(ClassicLike(spark_sparknet_stateServer="false"))
    with pytest.raises(ValueError, match="must be true or false, not 'off'"):
        session.uses_state_server(ConnectLike(spark_sparknet_stateServer="off"))
