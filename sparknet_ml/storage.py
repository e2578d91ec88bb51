"""The one place that opens, lists, renames or deletes a file the user named.

A location is any URI that the active SparkSession's Hadoop configuration reaches
(``hdfs://``, ``s3a://``, ``abfss://``, ``gs://``, ``sftp://``, ``file:``) or a plain path.
Hadoop's ``FileSystem`` of the session does the work, so ``spark.hadoop.*`` settings, the
connector jars and credentials the session has apply. A plain path goes where Spark's own
writers put it: on the default file system (``fs.defaultFS``), relative paths from its working
directory. Locations on the local file system (``file:``, or plain paths when the default file
system is local or no SparkSession is active) are read and written with Python's own calls.

Remote files travel through a private temporary copy inside Spark's local directory on the
driver (Spark deletes it when the session stops): the JVM streams them, py4j never carries
their bytes. A Spark Connect client has no Hadoop FileSystem: there, a URI with a scheme goes
through fsspec's implementation of that scheme (``pip install 'sparknet_ml[connect]'`` and the
scheme's package: paramiko for ``sftp``, s3fs, adlfs, gcsfs), configured the way fsspec and
those libraries configure themselves; the files and their layout are the same either way.

Every error is a :class:`StorageError`, one line that names the location and what failed.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]+):")

_CONNECTORS = {
    "s3a": "the hadoop-aws jar of the cluster's Hadoop version and the AWS SDK bundle "
           "(spark.jars.packages=org.apache.hadoop:hadoop-aws:VERSION)",
    "abfs": "the hadoop-azure jar (spark.jars.packages=org.apache.hadoop:hadoop-azure:VERSION)",
    "wasb": "the hadoop-azure jar (spark.jars.packages=org.apache.hadoop:hadoop-azure:VERSION)",
    "gs": "Google's GCS connector (spark.jars.packages=com.google.cloud.bigdataoss:"
          "gcs-connector:VERSION)",
    "sftp": "spark.hadoop.fs.sftp.impl=org.apache.hadoop.fs.sftp.SFTPFileSystem (the class "
            "is in Spark's Hadoop client jars)",
    "dbfs": "a Databricks runtime",
}
for _secure, _plain in (("abfss", "abfs"), ("wasbs", "wasb"), ("s3", "s3a")):
    _CONNECTORS[_secure] = _CONNECTORS[_plain]


class StorageError(OSError, ValueError):
    """A location could not be reached, read or written; the message names it."""


@dataclass(frozen=True)
class FileStatus:
    """What a location is: a folder or a file of ``size`` bytes, and whether it is a link."""

    is_dir: bool
    size: int
    is_link: bool


def scheme(uri: str) -> str | None:
    """The URI scheme of ``uri`` (``hdfs``, ``s3a``, ``file`` ...), None for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else None


def join(uri: str, *names: str) -> str:
    """``uri`` with ``names`` appended, separated by ``/``."""
    return posixpath.join(uri, *names)


def _split(uri: str) -> tuple[str, str]:
    """The parent location and the last name of ``uri``."""
    stripped = uri.rstrip("/") or uri
    parent, name = posixpath.split(stripped)
    return parent, name


class _Local:
    """The local file system, through Python's own calls."""

    def status(self, path: str) -> FileStatus | None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        link = os.path.islink(path)
        if link:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return FileStatus(False, 0, True)
        return FileStatus(os.path.isdir(path), st.st_size, link)

    def list_names(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def delete(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)

    def rename(self, source: str, target: str) -> None:
        if os.path.lexists(target):
            raise FileExistsError(f"{target} exists")
        os.rename(source, target)

    def inside(self, root: str, path: str) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([os.path.realpath(root), real]) == os.path.realpath(root)


class _Hadoop:
    """Hadoop's FileSystem of a classic SparkSession, through py4j."""

    def __init__(self, spark):
        self.jvm = spark._jvm
        self.conf = spark._jsparkSession.sessionState().newHadoopConf()

    def _fs(self, path: str):
        jpath = self.jvm.org.apache.hadoop.fs.Path(path)
        return jpath.getFileSystem(self.conf), jpath

    @contextlib.contextmanager
    def _scratch(self):
        """A private folder in Spark's local directory on the driver."""
        from pyspark import SparkFiles
        root = os.path.dirname(SparkFiles.getRootDirectory())
        with tempfile.TemporaryDirectory(prefix="sparknet-io-", dir=root) as folder:
            yield folder

    def status(self, path: str) -> FileStatus | None:
        fs, jpath = self._fs(path)
        try:
            st = fs.getFileLinkStatus(jpath)
        except Exception as err:  # noqa: BLE001 - py4j's error; classified below
            if _java_classes(err) & {"java.io.FileNotFoundException"}:
                return None
            raise
        return FileStatus(bool(st.isDirectory()), int(st.getLen()), bool(st.isSymlink()))

    def list_names(self, path: str) -> list[str]:
        fs, jpath = self._fs(path)
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(jpath))

    def read(self, path: str) -> bytes:
        fs, jpath = self._fs(path)
        with self._scratch() as folder:
            local = os.path.join(folder, "file")
            fs.copyToLocalFile(False, jpath, self.jvm.org.apache.hadoop.fs.Path(local), True)
            with open(local, "rb") as f:
                return f.read()

    def write(self, path: str, data: bytes) -> None:
        fs, jpath = self._fs(path)
        with self._scratch() as folder:
            local = os.path.join(folder, "file")
            with open(local, "wb") as f:
                f.write(data)
            fs.copyFromLocalFile(True, True, self.jvm.org.apache.hadoop.fs.Path(local), jpath)

    def makedirs(self, path: str) -> None:
        fs, jpath = self._fs(path)
        if not fs.mkdirs(jpath):
            raise OSError(f"mkdirs returned false for {path}")

    def delete(self, path: str) -> None:
        fs, jpath = self._fs(path)
        fs.delete(jpath, True)

    def rename(self, source: str, target: str) -> None:
        fs, jsource = self._fs(source)
        jtarget = self.jvm.org.apache.hadoop.fs.Path(target)
        if fs.exists(jtarget):
            raise FileExistsError(f"{target} exists")
        if not fs.rename(jsource, jtarget):
            raise OSError(f"the file system refused to rename it to {target}")

    def inside(self, root: str, path: str) -> bool:
        # Each name below root must not be a link (where the file system reports links).
        relative = posixpath.relpath(path, root)
        current = root
        for name in relative.split("/"):
            current = join(current, name)
            found = self.status(current)
            if found is None or found.is_link:
                return False
        return True


class _Fsspec:
    """A location reached from a Spark Connect client (which has no Hadoop FileSystem of its
    own) through fsspec's implementation of its scheme: ``sftp`` (paramiko), ``s3``/``s3a``
    (s3fs), ``abfs``/``abfss`` (adlfs), ``gs`` (gcsfs), ``hdfs`` (pyarrow), ... Options and
    credentials come from where fsspec and those libraries look: fsspec's configuration
    (``~/.config/fsspec``, ``FSSPEC_<PROTOCOL>_<OPTION>`` variables), the URI itself, and each
    library's own chain (AWS profiles, Azure identity, ssh keys)."""

    @staticmethod
    def _fs(uri: str):
        try:
            from fsspec.core import url_to_fs
            return url_to_fs(uri)
        except (ImportError, ValueError) as err:
            raise StorageError(f"{uri}: a Spark Connect client reaches {scheme(uri)}:// "
                               f"through fsspec (pip install 'sparknet_ml[connect]' and the "
                               f"scheme's package), which cannot here: {err}") from None

    def status(self, path: str) -> FileStatus | None:
        fs, inner = self._fs(path)
        try:
            info = fs.info(inner)
        except FileNotFoundError:
            return None
        link = bool(info.get("islink")) or info.get("type") == "link"
        return FileStatus(info.get("type") == "directory", int(info.get("size") or 0), link)

    def list_names(self, path: str) -> list[str]:
        fs, inner = self._fs(path)
        return sorted(posixpath.basename(name.rstrip("/")) for name in fs.ls(inner, detail=False))

    def read(self, path: str) -> bytes:
        fs, inner = self._fs(path)
        return fs.cat_file(inner)

    def write(self, path: str, data: bytes) -> None:
        fs, inner = self._fs(path)
        fs.makedirs(posixpath.dirname(inner), exist_ok=True)
        fs.pipe_file(inner, data)

    def makedirs(self, path: str) -> None:
        fs, inner = self._fs(path)
        fs.makedirs(inner, exist_ok=True)

    def delete(self, path: str) -> None:
        fs, inner = self._fs(path)
        fs.rm(inner, recursive=True)

    def rename(self, source: str, target: str) -> None:
        fs, inner = self._fs(source)
        _, inner_target = self._fs(target)
        if fs.exists(inner_target):
            raise FileExistsError(f"{target} exists")
        # a folder: one rename where the store has them (sftp's mv takes no options), else
        # a recursive copy and delete (object stores)
        recursive = "recursive" in inspect.signature(fs.mv).parameters
        fs.mv(inner, inner_target, **({"recursive": True} if recursive else {}))

    def inside(self, root: str, path: str) -> bool:
        # Each name below root must not be a link: folder listings describe an entry itself
        # (sftp's READDIR, a local lstat), where a status may follow it.
        fs, current = self._fs(root)
        for name in posixpath.relpath(self._fs(path)[1], current).split("/"):
            entries = {posixpath.basename(e["name"].rstrip("/")): e
                       for e in fs.ls(current, detail=True)}
            entry = entries.get(name)
            if entry is None or entry.get("islink") or entry.get("type") == "link":
                return False
            current = posixpath.join(current, name)
        return True


_LOCAL = _Local()


def _session():
    """The active (or default) classic SparkSession, None when there is none."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    if SparkContext._active_spark_context is None:
        return None
    return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()


def _backend(uri: str):
    """The file system that holds ``uri`` and the path to give it."""
    if not isinstance(uri, str) or not uri:
        raise StorageError(f"{uri!r} is not a path")
    from pyspark.sql.utils import is_remote
    found = scheme(uri)
    if found == "file":
        return _LOCAL, urlparse(uri).path
    if is_remote():  # a Connect client has no Hadoop FileSystem of its own
        return (_LOCAL, uri) if found is None else (_Fsspec(), uri)
    spark = _session()
    if spark is None:
        if found is None:
            return _LOCAL, uri
        raise StorageError(f"{uri}: a {found}:// location is reached through a SparkSession's "
                           "Hadoop configuration; create the SparkSession first")
    hadoop = _Hadoop(spark)
    if found is None:
        default = hadoop.jvm.org.apache.hadoop.fs.FileSystem.getDefaultUri(hadoop.conf)
        if default.getScheme() in (None, "file"):
            return _LOCAL, uri
    return hadoop, uri


def _java_classes(err: BaseException) -> set[str]:
    """Class names of a py4j error's Java exception and its causes."""
    java, names = getattr(err, "java_exception", None), set()
    while java is not None and len(names) < 16:
        names.add(str(java.getClass().getName()))
        java = java.getCause()
    return names


def _reason(err: BaseException, uri: str) -> str:
    """One line saying what failed for ``uri``."""
    classes = _java_classes(err)
    if isinstance(err, FileNotFoundError) or "java.io.FileNotFoundException" in classes:
        return f"{uri}: no such file or folder"
    if isinstance(err, PermissionError) or classes & {
            "org.apache.hadoop.security.AccessControlException",
            "java.nio.file.AccessDeniedException"}:
        return f"{uri}: permission denied"
    if classes & {"org.apache.hadoop.fs.UnsupportedFileSystemException",
                   "java.lang.ClassNotFoundException"}:
        name = scheme(uri)
        need = _CONNECTORS.get(name, f"spark.hadoop.fs.{name}.impl set to its FileSystem class "
                                     "and its jar on the classpath (spark.jars or "
                                     "spark.jars.packages)")
        return (f"{uri}: no Hadoop FileSystem for scheme {name!r} in this SparkSession; "
                f"it needs {need}")
    java = getattr(err, "java_exception", None)
    if java is not None:
        text = str(java.toString())
    else:
        text = f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"
    return f"{uri}: {(text.splitlines() or [type(err).__name__])[0]}"


@contextlib.contextmanager
def _reporting(uri: str, action: str):
    """Turn any failure inside into a one-line StorageError naming ``uri`` and ``action``."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - py4j, OSError: all become one line
        raise StorageError(f"{action} {_reason(err, uri)}") from None


def status(uri: str) -> FileStatus | None:
    """What ``uri`` is, None when nothing is there."""
    with _reporting(uri, "cannot reach"):
        backend, path = _backend(uri)
        return backend.status(path)


def exists(uri: str) -> bool:
    """Whether something is at ``uri``."""
    return status(uri) is not None


def is_file(uri: str) -> bool:
    """Whether ``uri`` is a file; False for a string that is no valid path (prototxt text)."""
    try:
        found = status(uri)
    except StorageError:
        return False
    return found is not None and not found.is_dir


def is_dir(uri: str) -> bool:
    """Whether ``uri`` is a folder."""
    found = status(uri)
    return found is not None and found.is_dir


def list_names(uri: str) -> list[str]:
    """The names in the folder ``uri``, sorted."""
    with _reporting(uri, "cannot list"):
        backend, path = _backend(uri)
        return backend.list_names(path)


def read_bytes(uri: str, cap: int, cap_name: str, inside: str | None = None) -> bytes:
    """The bytes of the file ``uri``, refused when over ``cap`` bytes (before reading).

    Parameters
    ----------
    uri : str
        The file.
    cap : int
        Largest size read; ``cap_name`` names the constant in the error.
    cap_name : str
        The name of the cap, for the error.
    inside : str, optional
        A folder ``uri`` must be in: no ``..`` and no link on the way (where the file system
        reports links).

    Raises
    ------
    StorageError
        Naming ``uri``: missing, a folder, over the cap, outside ``inside``, unreadable.
    """
    with _reporting(uri, "cannot read"):
        backend, path = _backend(uri)
        if inside is not None:
            _, root = _backend(inside)
            if (posixpath.commonpath([posixpath.normpath(root), posixpath.normpath(path)])
                    != posixpath.normpath(root) or not backend.inside(root, path)):
                raise StorageError(f"{uri} is a link or resolves outside {inside}; "
                                   "refusing to read it")
        found = backend.status(path)
        if found is None:
            raise FileNotFoundError(uri)
        if found.is_dir:
            raise StorageError(f"{uri} is a folder, not a file")
        _check_cap(uri, found.size, cap, cap_name)
        data = backend.read(path)
        _check_cap(uri, len(data), cap, cap_name)  # it may have grown since
        return data


def _check_cap(uri: str, size: int, cap: int, cap_name: str) -> None:
    if size > cap:
        raise StorageError(f"{uri}: {size} bytes, over the {cap} bytes cap ({cap_name})")


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to the file ``uri`` (replacing it), creating its folders."""
    with _reporting(uri, "cannot write"):
        backend, path = _backend(uri)
        backend.write(path, data)


def makedirs(uri: str) -> None:
    """Create the folder ``uri`` and its parents (nothing when it exists)."""
    with _reporting(uri, "cannot create"):
        backend, path = _backend(uri)
        backend.makedirs(path)


def delete(uri: str) -> None:
    """Delete ``uri`` (a folder with everything in it); nothing when it is missing."""
    with _reporting(uri, "cannot delete"):
        backend, path = _backend(uri)
        if backend.status(path) is not None:
            backend.delete(path)


def rename(source: str, target: str) -> None:
    """Rename ``source`` to ``target``, which must not exist (same file system)."""
    with _reporting(source, "cannot rename"):
        backend, path = _backend(source)
        backend.rename(path, _backend(target)[1])


def check_writable(uri: str) -> None:
    """Check that the folder ``uri`` can be created and written, leaving nothing behind.

    Creates ``uri`` (and missing parents), writes and deletes a file in it, then deletes the
    folders it created.

    Raises
    ------
    StorageError
        Naming ``uri`` and why it cannot be written.
    """
    created, parent = None, uri
    while parent and not exists(parent):
        created, parent = parent, _split(parent)[0]
        if parent == created:
            break
    probe = join(uri, f".sparknet-write-check-{uuid.uuid4().hex}")
    makedirs(uri)
    try:
        write_bytes(probe, b"")
        delete(probe)
    finally:
        if created is not None:
            delete(created)


def is_empty_dir(uri: str) -> bool:
    """Whether ``uri`` is a folder with nothing in it (False when it vanishes as we look)."""
    try:
        return is_dir(uri) and not list_names(uri)
    except StorageError as err:
        if "no such file or folder" in str(err):
            return False
        raise


def check_replaceable(uri: str, overwrite: bool, how: str, ours=None, what: str = "") -> None:
    """Refuse to replace what the user did not ask to lose.

    Nothing at ``uri``, or an empty folder, may be written. Anything else needs
    ``overwrite``, and then, when ``ours`` is given, must be what we write (``ours(uri)`` is
    true): a folder of the user's pictures is never deleted because a command was given
    ``--overwrite``.

    Parameters
    ----------
    uri : str
        The location to write.
    overwrite : bool
        Whether the user asked to replace what is there.
    how : str
        How to ask for that (``write().overwrite()``, ``--overwrite``), for the message.
    ours : callable, optional
        ``ours(uri) -> bool``: whether what is there is what we would write.
    what : str
        What ``ours`` recognises (``a saved model``), for the message.

    Raises
    ------
    StorageError
        One line naming ``uri``, why it is refused and, where it applies, ``how``.
    """
    if not exists(uri) or is_empty_dir(uri):
        return
    if not overwrite:
        raise StorageError(f"{uri} already exists; use {how} to replace it")
    if ours is not None and not ours(uri):
        raise StorageError(f"{uri} exists and is not {what}; refusing to replace it, even with "
                           f"{how} (remove it yourself or choose another path)")


class _Lost(Exception):
    """Another writer moved or replaced the location between our check and our rename."""


@contextlib.contextmanager
def replacing(uri: str, overwrite: bool, how: str = "write().overwrite().save(path)",
              ours=None, what: str = ""):
    """Stage a folder (or a file) that replaces ``uri`` only once it is complete.

    Yields a hidden sibling path to write into. When the block ends without an error the
    existing ``uri`` (if any) is renamed aside, the staged path is renamed to ``uri`` and
    the old one deleted. On any error, ours or a rename's, the staged path is deleted. A crash
    at any moment leaves ``uri`` as it was, or complete, or missing, never half written.
    Two saves racing to one path: each either completes or fails saying another writer got
    there first; neither leaves its staging behind.

    Parameters
    ----------
    uri, overwrite, how, ours, what
        As :func:`check_replaceable`, which runs first.

    Raises
    ------
    StorageError
        When :func:`check_replaceable` refuses, another writer got there first, or a rename
        fails.
    """
    check_replaceable(uri, overwrite, how, ours, what)
    parent, name = _split(uri)
    token = uuid.uuid4().hex
    staged = join(parent, f".{name}.staged-{token}")
    try:
        yield staged
        _swap(uri, staged, join(parent, f".{name}.replaced-{token}"))
    except BaseException as err:
        with contextlib.suppress(StorageError):
            delete(staged)
        if isinstance(err, _Lost):
            raise StorageError(f"cannot save {uri}: another writer got there first ({err}); "
                               "nothing of this save was kept") from None
        raise


def _swap(uri: str, staged: str, aside: str) -> None:
    """Rename ``uri`` to ``aside`` (when there), ``staged`` to ``uri``, then delete
    ``aside``; on failure put ``aside`` back where nobody else took ``uri``.

    Raises
    ------
    _Lost
        When ``uri`` vanished or appeared under us (another writer).
    """
    moved = False
    if exists(uri):
        try:
            rename(uri, aside)
        except StorageError as err:
            if "no such file or folder" in str(err) or not exists(uri):  # it was there
                raise _Lost(str(err)) from None
            raise
        moved = True
    try:
        rename(staged, uri)
    except StorageError as err:
        taken = exists(uri) or "exists" in str(err)
        if moved and not exists(uri):
            rename(aside, uri)  # nobody took the place: the old one goes back
        elif moved:
            delete(aside)
        if taken:
            raise _Lost(str(err)) from None
        raise
    if moved:
        delete(aside)
