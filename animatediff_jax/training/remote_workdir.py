"""A training workdir in Cloud Storage (`--workdir gs://bucket/run`, what a TPU slice of several workers
shares). Checkpoints go there directly: orbax reads and writes gs:// through etils.epath, which needs
gcsfs. The run's other files — TensorBoard events, validation GIFs, the exports and config.json — are
written by code that opens local files, so they are written to a local staging folder and copied up
(fsspec, the files that changed since the last copy) after each checkpoint and validation and when the
run ends. For a local workdir the staging folder is the workdir itself and nothing is copied.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

import fsspec

from animatediff_jax.errors import OutputError, UsageError
from animatediff_jax.outputs import URL, URL_LIKE, is_url

PACKAGES = {"gs": "gcsfs"}  # the URL schemes a workdir may have, and what writes each


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
    """UsageError (one line naming `flag`) for a URL workdir of a scheme the run cannot write, or whose
    package is not installed (found without importing it), and for a path that starts like a URL without
    being one ('gs:/bucket/run' would train into a local folder named 'gs:'). Other local paths pass."""
    match = URL.match(workdir)
    if match is None:
        if URL_LIKE.match(workdir):  # 'gs:/bucket', 'gs:bucket': a local folder named 'gs:'?
            raise UsageError(f"{flag} {workdir}: starts like a URL but is not one (scheme://...): a '/' missing? "
                             "A Cloud Storage workdir is gs://bucket/path; name a local folder without a ':'")
        return
    package = PACKAGES.get(match.group(1))
    if package is None:
        raise UsageError(f"{flag} {workdir}: a workdir is a local folder or a gs:// (Cloud Storage) path")
    if not workdir[match.end():].strip("/"):
        raise UsageError(f"{flag} {workdir}: names no bucket (gs://bucket/path)")
    if importlib.util.find_spec(package) is None:
        raise UsageError(f"{flag} {workdir}: writing to Cloud Storage needs {package}, which is not installed "
                         f"(pip install -e \".[gcs]\"; tpu/install.sh installs it)")


def exists(path: str) -> bool:
    """Whether a file or folder exists at `path`, a local path or a URL."""
    fs, root = fsspec.core.url_to_fs(path)
    return fs.exists(root)


def read_text(path: str) -> str | None:
    """The text of the file at `path`, a local path or a URL; None when there is none."""
    fs, root = fsspec.core.url_to_fs(path)
    try:
        with fs.open(root, "r", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Staging:
    """Where the run writes its non-checkpoint files (`local`) and how they reach `workdir` (`upload`).

    For a URL workdir `local` is a fresh temporary folder, removed by `close`; otherwise it is `workdir`.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.staged = is_url(workdir)
        self.local = tempfile.mkdtemp(prefix="animatediff-workdir-") if self.staged else workdir
        self._copied: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) when copied

    def remote(self, path: str) -> str:
        """`path` (under `local`) as it is named in the workdir."""
        if not self.staged:
            return path
        return self.workdir.rstrip("/") + "/" + os.path.relpath(path, self.local).replace(os.sep, "/")

    def upload(self) -> list[str]:
        """Copy the files of `local` that are new or changed since the last call to the workdir; returns
        their workdir names. OutputError naming the workdir when the copy fails."""
        if not self.staged:
            return []
        fs, root = fsspec.core.url_to_fs(self.workdir)
        copied = []
        for folder, _, names in os.walk(self.local):
            for name in names:
                path = os.path.join(folder, name)
                stat = os.stat(path)
                key = os.path.relpath(path, self.local)
                if self._copied.get(key) == (stat.st_size, stat.st_mtime_ns):
                    continue
                target = root.rstrip("/") + "/" + key.replace(os.sep, "/")
                try:
                    fs.put_file(path, target)
                except Exception as e:  # the storage client's own errors (auth, quota, network)
                    raise OutputError(f"--workdir {self.workdir}: copying {key} there failed: {e}") from e
                self._copied[key] = (stat.st_size, stat.st_mtime_ns)
                copied.append(self.remote(path))
        return copied

    def close(self) -> None:
        """Remove the staging folder (a URL workdir's; a local workdir is left as it is)."""
        if self.staged:
            shutil.rmtree(self.local, ignore_errors=True)
