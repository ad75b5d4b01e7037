"""Writing outputs safely: all or nothing, never silently over an existing output, normal permissions.

- `check_output(path, name=..., overwrite=..., folder=...)`: the refusal a CLI gives *before any work*: an
  existing output without `--overwrite`, a file where a folder is expected (or the reverse), a
  parent that is a file, a location where no file can be created (tried, `write_problem`), an
  existing device, FIFO or socket (with `--overwrite` too), a name whose suffix contradicts what is
  written. Each is an `OutputError` naming the path. `refuse_input_as_output`: an output that is one of
  the command's inputs, or a folder holding one.
- A symbolic link output is written through: its target is replaced, the link kept (`target`).
- `atomic_path(path)`: a temporary file next to `path`, renamed onto it (`os.replace`) only when the
  block succeeds. An output `check_output` was told not to replace (no `--overwrite`) is still not
  replaced when another process wrote it meanwhile (two runs given the same output): the file is
  put there by a hard link, which fails if the name exists, and the run ends with an `OutputError`. `atomic_folder(path)`: a temporary sibling folder, swapped in whole when the block
  succeeds (`renameat2(RENAME_EXCHANGE)` where the kernel has it, so a killed run leaves either the
  old folder or the new one, never a mix).
- Temporary names are `.<name>.<pid>-<token>@<host>.partial` (and `.old` for a swapped-out folder):
  on every failure path they are removed; leftovers of a killed run (same host, same owner, process
  gone) are removed by the next write to the same output, anything else is left alone (ignored).
  `temp_name` and `clean_stale_matching` give other writers (a sampling run's folder, `run_folder.py`)
  the same names and the same rule.
- Files and folders are created with the umask's permissions (as `cp` and `mkdir` would), not the
  0600/0700 of `tempfile`.
- An `OSError` while writing becomes an `OutputError` naming the output (`disk full`, `read-only`...);
  parent folders created for the output are removed again when the write fails.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
import socket
import stat
from typing import Iterator

from animatediff_jax.cleanup import missing_folders, remove_empty, remove_path
from animatediff_jax.errors import OutputError, UserError
from animatediff_jax.hub_ids import WEIGHT_SUFFIXES
from animatediff_jax.interrupts import raise_if_signalled, temporary

_HOST = socket.gethostname().replace("/", "_")
# Outputs `check_output` was asked not to replace (real path -> the flag that would allow it): the final
# rename of `atomic_path`/`atomic_folder` then refuses to replace what appeared there since.
_MUST_BE_NEW: dict[str, str] = {}
_RENAME_EXCHANGE = 2  # linux/fs.h


def temp_name(path: str, kind: str = "partial") -> str:
    """`<dir>/.<name>.<pid>-<token>@<host>.<kind>` for `path` = `<dir>/<name>`: a fresh temporary name
    that says which process on which host writes it (what `clean_stale_matching` reads)."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.{os.getpid()}-{secrets.token_hex(4)}@{_HOST}.{kind}")


def _stale_pattern(base_regex: str) -> re.Pattern:
    return re.compile(rf"\.(?:{base_regex})\.(?P<pid>\d+)-[0-9a-f]{{8}}@(?P<host>[^/]*)\.(partial|old)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path: str) -> list[str]:
    """Remove temporary leftovers of killed runs that wrote `path`: entries named like ours, made
    on this host by this user, whose process is gone. Returns what was removed."""
    directory, base = os.path.split(os.path.abspath(path))
    return clean_stale_matching(directory, re.escape(base))


def clean_stale_matching(directory: str, base_regex: str) -> list[str]:
    """`clean_stale` for every output in `directory` whose name matches `base_regex` (a regular
    expression for `<name>` in `temp_name`'s `.<name>.<pid>-<token>@<host>.<kind>`): removed only
    when made on this host, by this user, by a process that is gone. Returns what was removed."""
    pattern, removed = _stale_pattern(base_regex), []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if not m or m["host"] != _HOST or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        full = os.path.join(directory, name)
        try:
            st = os.lstat(full)
            if st.st_uid != os.getuid():
                continue
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
            removed.append(full)
        except OSError:
            continue  # someone else's business; ignored
    return removed


def nearest_existing(path: str) -> str:
    """`path` or its nearest ancestor that exists (what decides whether `path` can be created)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def not_a_folder(path: str) -> str:
    """What `path` (existing, a dangling symbolic link included) is, when it is not a folder, for
    "{path} is {...}, not a folder": 'a broken symbolic link (to T)' or 'a file'."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"a broken symbolic link (to {os.readlink(path)})"
    return "a file"


def write_failure(e: OSError, path: str) -> str:
    """Why writing `path` failed, in words for one line: the OS's, led by "disk full" when the disk is
    full. A short write reported by numpy or another library carries no errno ("49152 requested and
    38880 written"); then the free space left where `path` lives tells (under 1 MiB: full)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {e.strerror}"
    reason = e.strerror or str(e)
    if e.errno is None:
        try:
            free = shutil.disk_usage(nearest_existing(os.path.dirname(os.path.abspath(path)))).free
        except OSError:
            return reason
        if free < 1 << 20:
            return f"disk full, {free} bytes left: {reason}"
    return reason


def write_problem(folder: str) -> str | None:
    """Why no file can be created in the existing folder `folder`, or None when one can. Tried by
    creating and removing an empty hidden file, since permission bits do not tell (root passes
    `os.access` on read-only mounts and in /proc)."""
    probe = temp_name(os.path.join(folder, "write-probe"), "probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        if e.errno == errno.ENOENT:  # an existing folder refusing a new file: /proc, /sys
            return "a file system that takes no new files: creating one said 'No such file or directory'"
        return f"creating a file there failed: {write_failure(e, probe)}"
    os.unlink(probe)
    return None


def refuse_unsafe_target(path: str, name: str = "output") -> None:
    """OutputError for an output path that must never be written: empty (it would resolve to the
    current folder; the message names the output as `name`, the CLI's flag), a folder holding the
    current folder (replacing it would delete the folder the run stands in: a converter given `""`
    once replaced a whole checkout), or an existing entry that is neither a regular file nor a folder
    (a device, FIFO or socket: the rename would replace `/dev/full` by a file). A symbolic link is
    judged, and written, as its target (`target`)."""
    path = os.fspath(path)
    if not path.strip():
        raise OutputError(f"{name}: empty path")
    real, here = target(path), os.path.realpath(os.getcwd())
    if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
        raise OutputError(f"{path}: is the current folder or holds it; refusing to write over it")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(f"{path}: exists and is not a regular file or folder (a device, FIFO or socket); "
                          "refusing to write over it")


def target(path: str) -> str:
    """Where writing `path` lands: a symbolic link (a dangling one too) is written through, its target
    replaced and the link kept, as `cp` and `>` do."""
    return os.path.realpath(os.fspath(path))


def refuse_input_as_output(output: tuple[str, str], inputs: list[tuple[str, str]]) -> None:
    """OutputError when the output (`(flag, path)`) is one of the `inputs` (`(flag, path)` each; ones
    that do not exist locally, hub ids, are skipped), a folder holding one (replacing it would destroy
    the input while it is read), or inside an input folder (it would become part of the input, or
    replace a part of it: `lora base base/unet`)."""
    out_flag, out = output
    real = target(out)
    for flag, path in inputs:
        if not os.path.exists(path):
            continue
        same = os.path.exists(out) and os.path.samefile(out, path)
        if same or _within(target(path), real):
            raise OutputError(f"{out} ({out_flag}): {'is' if same else 'holds'} the input {path} ({flag}); "
                              "write the output elsewhere")
        if os.path.isdir(path) and _within(real, target(path)):
            raise OutputError(f"{out} ({out_flag}): is inside the input folder {path} ({flag}); "
                              "write the output elsewhere")


def _within(path: str, folder: str) -> bool:
    """Whether real path `path` lies below real path `folder`."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


# what names of files (not folders) end in, besides WEIGHT_SUFFIXES: a folder output so named is a slip
FILE_SUFFIXES = (".txt", ".json", ".yaml", ".yml", ".md", ".csv", ".log", ".gif", ".mp4", ".webm", ".png", ".jpg",
                 ".jpeg", ".npy", ".npz", ".zip", ".tar", ".gz")


def _refuse_suffix(path: str, folder: bool, suffixes: tuple[str, ...] | None) -> None:
    """OutputError when the name of output `path` contradicts what is written: a file not ending in one
    of `suffixes` (None: any name), a folder named like a file (`WEIGHT_SUFFIXES`, `FILE_SUFFIXES`; the
    message offers `suffixes` where the command writes a file for them)."""
    name = os.path.basename(os.path.normpath(path)).lower()
    if folder and name.endswith(WEIGHT_SUFFIXES + FILE_SUFFIXES):
        like = "a weights file" if name.endswith(WEIGHT_SUFFIXES) else "a file"
        files = f", or a name ending in {', '.join(suffixes)} for a file" if suffixes else ""
        raise OutputError(f"{path}: the output is a folder, but the name ends in {os.path.splitext(name)[1]} "
                          f"like {like}; give a folder name without that suffix{files}")
    if not folder and suffixes is not None and not name.endswith(suffixes):
        raise OutputError(f"{path}: the output is a {' or '.join(suffixes)} file; give a name ending in "
                          f"{'one of ' if len(suffixes) > 1 else ''}{', '.join(suffixes)}")


URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")  # scheme://...
URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # gs://b, gs:/b, s3:b: each would make a local folder 'gs:'


def is_url(path: str) -> bool:
    """Whether `path` is a URL (scheme://...) rather than a local path."""
    return URL.match(path) is not None


def output_path(text: str) -> str:
    """argparse `type=` of a local output file or folder: refuses an empty path (`<flag>: empty path`),
    which would otherwise name the current folder only after all the work, and a URL (gs://..., or one
    with a slash missing), which would be written here as a folder named 'gs:' (only `train --workdir`
    writes to Cloud Storage: `path_or_url`)."""
    path = path_or_url(text)
    if URL_LIKE.match(path):
        raise argparse.ArgumentTypeError(f"{path}: not a local path (a URL would be written here, as a folder "
                                         f"named {path.split(':')[0]}:); write locally, then copy it")
    return path


def path_or_url(text: str) -> str:
    """argparse `type=` of an input, or of an output that may be a URL (`train --workdir`, checked by
    training/remote_workdir.py): refuses an empty path (it would name the current folder: `--weights ''`
    read ./base, `--csv ''` was '--csv : not found')."""
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return text


input_path = path_or_url  # inputs: a local path or a hub id (checked where they are read)


def check_output(path: str, *, name: str, overwrite: bool = False, folder: bool = False,
                 flag: str = "--overwrite", suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse, before any work, an output that cannot or may not be written (`refuse_unsafe_target`
    included) or whose name contradicts what is written (`suffixes`: those a file output may end in,
    None: any; a folder never takes a weights file's suffix). An existing empty folder counts as
    absent; a symbolic link counts as its target. Raises `OutputError` naming `path` (an empty one by
    `name`, the flag or argument that gave it)."""
    refuse_unsafe_target(path, name)
    path = os.fspath(path)
    real = target(path)
    if os.path.exists(real):
        is_dir = os.path.isdir(real)
        if folder and not is_dir:
            raise OutputError(f"{path}: exists and is not a folder (the output is a folder)")
        if not folder and is_dir:
            raise OutputError(f"{path}: is a folder (the output is a file)")
        if not overwrite and not (is_dir and not os.listdir(real)):
            raise OutputError(f"{path}: already exists; pass {flag} to replace it")
    _refuse_suffix(path, folder, suffixes)
    if overwrite:
        _MUST_BE_NEW.pop(real, None)
    else:
        _MUST_BE_NEW[real] = flag
    parent = nearest_existing(os.path.dirname(real))
    if not os.path.isdir(parent):
        raise OutputError(f"{path}: cannot be created: {parent} is {not_a_folder(parent)}, not a folder")
    why = write_problem(parent)
    if why:
        raise OutputError(f"{path}: cannot be created: {parent} is not writable ({why})")


def _make_parents(directory: str) -> list[str]:
    """`os.makedirs`, returning the folders it created (deepest first, as `cleanup.remove_empty` takes them)."""
    created = missing_folders(directory)
    for d in reversed(created):
        os.mkdir(d)
    return created


@contextlib.contextmanager
def _writing(path: str, make_temp) -> Iterator[str]:
    """Shared frame of `atomic_path`/`atomic_folder`: parents, temp creation, OSError -> OutputError,
    cleanup on every failure path (KeyboardInterrupt included)."""
    refuse_unsafe_target(path)
    path = target(path)
    created: list[str] = []
    tmp, done = None, False
    try:
        created = _make_parents(os.path.dirname(path))
        clean_stale(path)
        tmp = make_temp(path)
        with temporary(tmp, created):  # removed should a stuck run be ended (interrupts.py)
            yield tmp
        done = True
    except OutputError as e:  # from a file written inside our temp folder: name where it was going
        if tmp is not None and tmp in str(e):
            raise OutputError(str(e).replace(tmp, path)) from e.__cause__
        raise
    except UserError:
        raise
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({write_failure(e, tmp or path)})") from e
    finally:
        if not done:
            if tmp is not None:
                remove_path(tmp)
            remove_empty(created)


def _appeared(path: str) -> OutputError:
    return OutputError(f"{path}: appeared while this ran (another run writing the same output?); left as it "
                       f"is, this run's result not written; pass {_MUST_BE_NEW[target(path)]} to replace it")


def _put_file(tmp: str, path: str) -> None:
    """Rename the finished file `tmp` onto `path`; one that must be new is linked there (which fails if
    the name exists), then `tmp` removed: `OutputError` when it exists."""
    real = target(path)
    if real not in _MUST_BE_NEW:
        os.replace(tmp, real)
        return
    try:
        os.link(tmp, real)
    except FileExistsError:
        raise _appeared(path) from None
    except OSError:  # a filesystem without hard links: the check, then the rename
        if os.path.lexists(real):
            raise _appeared(path) from None
        os.replace(tmp, real)
    else:
        os.unlink(tmp)
    del _MUST_BE_NEW[real]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _give_umask_modes(root: str) -> None:
    """Regular files under `root` (or `root` itself) get 0666 & ~umask, as `cp` would give them: some
    writers (safetensors' save_file, torch.save) replace the file we made with one of mode 0600."""
    mode = 0o666 & ~_umask()
    files = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    for f in files:
        if not os.path.islink(f):
            os.chmod(f, mode)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary file name next to `path` (the file exists, empty, with the umask's
    permissions); rename it onto `path` only if the block succeeds. See the module docstring."""
    def make_temp(real: str) -> str:
        tmp = temp_name(real, "partial")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        return tmp

    with _writing(path, make_temp) as tmp:
        yield tmp
        raise_if_signalled()  # a Ctrl-C/SIGTERM whose exception was swallowed never completes an output
        _give_umask_modes(tmp)
        _put_file(tmp, path)


def _libc_renameat2():
    """glibc's renameat2, or None (then the swap falls back to two renames)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_renameat2 = _libc_renameat2()
_AT_FDCWD = -100


def exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths (Linux `renameat2(RENAME_EXCHANGE)`). False if the system
    or filesystem cannot; raises OSError for other failures."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _swap_in(tmp: str, path: str) -> None:
    """Put the finished folder `tmp` at `path`, replacing an existing folder as a whole."""
    if not os.path.isdir(path):
        os.rename(tmp, path)  # absent (or an empty folder made meanwhile): one atomic rename
        return
    if exchange(tmp, path):  # tmp now holds the old folder
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = temp_name(path, "old")  # fallback: a kill between the renames leaves the old one here
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """Yield a temporary sibling folder of `path` (made with the umask's permissions); when the
    block succeeds it replaces `path` as a whole (an existing folder included). See the module
    docstring."""
    def make_temp(real: str) -> str:
        tmp = temp_name(real, "partial")
        os.mkdir(tmp, 0o777)
        return tmp

    with _writing(path, make_temp) as tmp:
        yield tmp
        raise_if_signalled()
        _give_umask_modes(tmp)
        real = target(path)
        if real in _MUST_BE_NEW:
            if os.path.lexists(real) and not (os.path.isdir(real) and not os.listdir(real)):
                raise _appeared(path)
            del _MUST_BE_NEW[real]
        _swap_in(tmp, real)
