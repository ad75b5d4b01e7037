"""Where `data.build` and `data.precompute` write a dataset: `<data_dir>/<builder>/<name>/<version>`,
refused before any work when it exists (unless `--overwrite`), and built whole or not at all.

TFDS skips building a dataset whose folder exists (and would report the old one as written), so each
build runs in a fresh TFDS `data_dir` inside `outputs.atomic_folder`'s temporary folder; the finished
dataset then replaces the folder as a whole, and a failed or interrupted build leaves it as it was.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from typing import Iterator

from animatediff_jax.outputs import atomic_folder, check_output
from animatediff_jax.run_folder import check_writable_parent


def dataset_folder(data_dir: str, builder, name: str) -> str:
    """The folder TFDS builds `builder` (a builder class) with config `name` in, under `data_dir`."""
    return os.path.join(data_dir, builder.name, name, str(builder.VERSION))


def check_dataset_output(data_dir: str, builder, name: str, overwrite: bool) -> str:
    """The dataset's folder, refused now (OutputError, one line) when `--data_dir` cannot be written or the
    dataset exists without `overwrite` (a URL is refused by its argparse type, `outputs.output_path`: the
    atomic build here renames local folders; build locally, then copy)."""
    check_writable_parent(data_dir, "--data_dir")
    folder = dataset_folder(data_dir, builder, name)
    check_output(folder, name="--name", overwrite=overwrite, folder=True)
    return folder


@contextlib.contextmanager
def fresh_build(data_dir: str, builder, name: str) -> Iterator[str]:
    """Yield an empty TFDS `data_dir` to build `builder`'s config `name` in; when the block succeeds the
    dataset built there replaces `dataset_folder(data_dir, builder, name)` whole (module docstring).
    Says first which folder it writes; the block's stdout is dropped (TFDS prints its 'Downloading and
    preparing ... to' and 'downloaded and prepared to' lines naming the temporary folder)."""
    final = dataset_folder(data_dir, builder, name)
    print(f"writing {final} ...", flush=True)
    with atomic_folder(final) as tmp, contextlib.redirect_stdout(io.StringIO()):
        staging = os.path.join(tmp, ".tfds")
        yield staging
        built = dataset_folder(staging, builder, name)
        for entry in os.listdir(built):
            os.rename(os.path.join(built, entry), os.path.join(tmp, entry))
        shutil.rmtree(staging)
