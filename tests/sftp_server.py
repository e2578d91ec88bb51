"""A real non-local Hadoop file system for the tests: Debian's sshd on 127.0.0.1, reached
through Hadoop's SFTPFileSystem (in pyspark's Hadoop client jars).

The server runs from its own config file on a free port, accepts one generated key (PEM RSA:
the JSch inside Hadoop reads no other format) and offers the legacy algorithms that JSch needs;
it is stopped by pid. Its files live in a local folder, so tests can look at and damage what
Spark wrote there.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess

from .local_server import free_port, wait_until_listening

SSHD = "/usr/sbin/sshd"


def key_path(base: str) -> str:
    """Where the client key of a test run whose temporary folder is ``base`` lives."""
    return os.path.join(base, "sftp-client", "key")


def client_key(base: str) -> str:
    """A fresh passphrase-less PEM RSA key pair at :func:`key_path`; returns its path."""
    key = key_path(base)
    os.makedirs(os.path.dirname(key), exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "",
                    "-f", key], check=True)
    return key


def spark_conf(key: str) -> dict[str, str]:
    """The SparkSession settings that reach ``sftp://`` with ``key``."""
    return {"spark.hadoop.fs.sftp.impl": "org.apache.hadoop.fs.sftp.SFTPFileSystem",
            "spark.hadoop.fs.sftp.keyfile": key}


def conf_arguments(key: str) -> list[str]:
    """:func:`spark_conf` as ``--conf KEY=VALUE`` arguments of a command line."""
    return [x for name, value in spark_conf(key).items() for x in ("--conf", f"{name}={value}")]


class SftpServer:
    """sshd serving ``root`` (a local folder) as ``sftp://USER@127.0.0.1:PORT/...``."""

    def __init__(self, folder: str, key: str):
        self.folder, self.root, self.key = folder, os.path.join(folder, "served"), key
        os.makedirs(self.root)
        self.port = free_port()
        host_key = os.path.join(folder, "host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "",
                        "-f", host_key], check=True)
        config = os.path.join(folder, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                    "HostKeyAlgorithms +ssh-rsa\nPubkeyAcceptedAlgorithms +ssh-rsa\n"
                    "KexAlgorithms +diffie-hellman-group14-sha1\n"
                    f"AuthorizedKeysFile {key}.pub\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                    f"StrictModes no\nUsePAM no\nPidFile {folder}/sshd.pid\n"
                    "Subsystem sftp internal-sftp\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
        self.log = os.path.join(folder, "sshd.log")
        self.process = subprocess.Popen([SSHD, "-D", "-f", config, "-E", self.log])
        wait_until_listening(self, "sshd", 20, 0.1)

    def url(self, *names: str) -> str:
        """The ``sftp://`` URI of ``names`` under the served folder."""
        return f"sftp://{getpass.getuser()}@127.0.0.1:{self.port}" + os.path.join(
            self.root, *names)

    def local(self, *names: str) -> str:
        """Where ``names`` under the served folder are on this machine's disk."""
        return os.path.join(self.root, *names)

    def stop(self) -> None:
        """Stop sshd (by pid); its sessions end as their clients disconnect."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(10)


def available() -> bool:
    """Whether sshd and ssh-keygen are installed (``make setup`` installs openssh-server)."""
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None
