import pytest

from .standalone import StandaloneCluster


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A standalone master and two 1-core, 2 GiB workers on 127.0.0.1 for the test module;
    stopped by pid afterwards, and checked to leave no process (JVM or Python worker) behind."""
    cluster = StandaloneCluster(str(tmp_path_factory.mktemp("standalone")), workers=2, cores=1,
                                memory="2g")
    try:
        cluster.start()
        yield cluster
    finally:
        leftovers = cluster.stop()
    assert not leftovers, f"still running after the cluster was stopped: {leftovers}"
