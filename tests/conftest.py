import os

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GLOG_minloglevel", "2")

import pytest  # noqa: E402

from . import sftp_server  # noqa: E402


@pytest.fixture(scope="session")
def sftp_key(tmp_path_factory):
    """The client key of the tests' SFTP server (generated once per test run)."""
    if not sftp_server.available():
        pytest.skip("sshd is not installed (make setup installs openssh-server)")
    return sftp_server.client_key(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def sftp(sftp_key, tmp_path_factory):
    """sshd on 127.0.0.1 serving a temporary folder over SFTP for the whole test run; stopped
    by pid at the end."""
    server = sftp_server.SftpServer(str(tmp_path_factory.mktemp("sftp")), sftp_key)
    yield server
    server.stop()
