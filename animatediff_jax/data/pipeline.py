"""Input pipeline: per-host sharding, seeded shuffle, batching, prefetch and a resumable position.

    source = load_source("/data/tfds/webvid/webvid_256/1.0.0")      # or ProceduralSource(...)
    it = InputPipeline(source, batch_size=per_host_batch, seed=0,
                       process_index=jax.process_index(), process_count=jax.process_count())
    it.restore(saved_state)          # optional: from the train checkpoint
    batch = next(it)                 # {"video": (B, F, H, W, 3) uint8, "caption": [str] * B,
                                     #  "dataset_index": (B,) int64 (position in `source`), every other feature stacked}
    state = it.state()               # {"examples_seen": int, ...}: save it with the checkpoint

A source is anything with `len()` and `source[i] -> dict` (a built TFDS dataset's `DatasetSource`, or
`ProceduralSource`). Epoch `e` visits a permutation of all examples drawn from `(seed, e)`; host `p`
of `P` takes the `p`-th of `P` equal contiguous slices of it (the `len % P` left over rotate with
the permutation), so hosts read disjoint examples and take the same number of steps. The position is
the number of examples this host has handed out; batches may straddle epochs, and restoring it
continues with exactly the next example: nothing repeated, nothing skipped. Random horizontal flips
are drawn per (seed, epoch, example), so they too are reproducible across a resume.
"""
from __future__ import annotations

import bisect
import concurrent.futures
import glob
import itertools
import json
import os
import queue
import threading
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from animatediff_jax.data import procedural
from animatediff_jax.errors import InputError
from animatediff_jax.text_files import read_text


# what a reader of examples needs: each a set of features, any one of which will do
VIDEO_FEATURES = ("video", "caption")
LATENT_FEATURES = ("latent_mean", "latent_logvar", "caption")
# the files of a built TFDS dataset besides its ArrayRecord shards, and what to do when one is missing or damaged
DATASET_FILES = ("dataset_info.json", "features.json")
DAMAGED = "the dataset is damaged: rebuild it (data.build or data.precompute) or copy it again"


def load_source(dataset_dir: str, split: str = "train", what: str = "dataset",
                needs: Sequence[Sequence[str]] = (VIDEO_FEATURES, LATENT_FEATURES)):
    """Random-access source over a built TFDS dataset directory (…/name/config/version). No TF needed.
    InputError `<what> <dataset_dir>: ...` for a folder that holds no built dataset, or whose examples
    lack the features of every set in `needs` (clips of data.build: VIDEO_FEATURES; data.precompute's
    latents: LATENT_FEATURES); `<what> <file>: ...` for its JSON files (dataset_info.json...) that are
    missing, not UTF-8 text or not JSON, and for an ArrayRecord shard that is missing, truncated or
    damaged (TFDS's and array_record's tracebacks): each shard is opened and its record count checked
    here, and a record found damaged later, when read, is such an error naming its shard (`DatasetSource`)."""
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader

    present = [f for f in DATASET_FILES if os.path.isfile(os.path.join(dataset_dir, f))]
    if not present and not glob.glob(os.path.join(glob.escape(dataset_dir), "*.array_record*")):
        raise InputError(f"{what} {dataset_dir}: not a built TFDS dataset (no dataset_info.json; give the "
                         "…/name/config/version folder that data.build or data.precompute printed)")
    for file in DATASET_FILES:
        if file not in present:
            raise InputError(f"{what} {os.path.join(dataset_dir, file)}: missing; {DAMAGED}")
    for file in sorted(glob.glob(os.path.join(glob.escape(dataset_dir), "*.json"))):
        try:
            json.loads(read_text(file))
        except ValueError as e:
            raise InputError(f"{what} {file}: not a readable TFDS dataset file: {e}") from None
    builder = tfds.builder_from_directory(dataset_dir)
    features = set(builder.info.features.keys())
    if not any(set(need) <= features for need in needs):
        kinds = {VIDEO_FEATURES: "video clips (data.build)", LATENT_FEATURES: "pre-computed latents (data.precompute)"}
        wanted = " or ".join(kinds.get(tuple(n), "/".join(n)) for n in needs)
        raise InputError(f"{what} {dataset_dir}: its examples hold {sorted(features)}, not {wanted}")
    shards = builder.info.splits[split]
    files = [os.fspath(f) for f in shards.filepaths]
    for file, length in zip(files, shards.shard_lengths):
        if not os.path.isfile(file):
            raise InputError(f"{what} {file}: missing (one of the {len(files)} shards dataset_info.json lists); "
                             f"{DAMAGED}")
        reader = ArrayRecordReader(file)
        readable, records = reader.ok(), reader.num_records()
        try:
            reader.close()  # raises the reason a file that is not ok could not be opened
        except RuntimeError as e:
            raise InputError(f"{what} {file}: not a readable ArrayRecord shard ({_reason(e)}); {DAMAGED}") from None
        if not readable or records != length:
            raise InputError(f"{what} {file}: holds {records} records, dataset_info.json lists {length}; {DAMAGED}")
    return DatasetSource(builder.as_data_source(split=split), files, shards.shard_lengths, what)


class DatasetSource:
    """A built dataset's examples (`len()`, `source[i] -> dict`): a record that cannot be read or decoded (a
    shard damaged after `load_source` checked it, or inside where opening cannot see) is an InputError
    `<what> <shard>: its record <i> ...` instead of array_record's or TFDS's traceback."""

    def __init__(self, source, files: Sequence[str], lengths: Sequence[int], what: str):
        self.source, self.files, self.what = source, files, what
        self.ends = list(itertools.accumulate(lengths))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.source):
            raise IndexError(index)
        try:
            return self.source[index]
        except (RuntimeError, ValueError) as e:  # array_record's reading, TFDS's decoding
            shard = bisect.bisect_right(self.ends, index)
            record = index - (self.ends[shard - 1] if shard else 0)
            raise InputError(f"{self.what} {self.files[shard]}: its record {record} (example {index}) cannot be "
                             f"read ({_reason(e)}); {DAMAGED}") from None


def _reason(error: Exception) -> str:
    """The first line of a reading library's error, or that it gave none."""
    return (str(error).strip().splitlines() or ["damaged or truncated"])[0]


class ProceduralSource:
    """The procedural world as an in-memory random-access source (same features as its TFDS builder)."""

    def __init__(self, num_examples: int, seed: int = 0, frames: int = 16, size: int = 64,
                 style: str = "plain", trigger: str | None = None, motion: bool = True):
        if num_examples < 1:
            raise ValueError(f"ProceduralSource needs num_examples >= 1, got {num_examples}")
        self.num_examples, self.seed, self.frames, self.size = num_examples, seed, frames, size
        self.style, self.trigger, self.motion = style, trigger, motion

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(index)
        if self.motion:
            video, caption = procedural.generate_clip(self.seed, index, self.frames, self.size, self.style,
                                                      self.trigger)
        else:
            image, caption = procedural.generate_image(self.seed, index, self.size, self.style, self.trigger)
            video = image[None]
        return {"video": video, "caption": caption, "index": index}


def normalize_video(video: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] (what the VAE encoder takes)."""
    return video.astype(np.float32) / 127.5 - 1.0


def host_order(num_examples: int, epoch: int, seed: int, shuffle: bool, process_index: int,
               process_count: int) -> np.ndarray:
    """(num_examples // process_count,) source indices host `process_index` reads in `epoch`."""
    per_host = num_examples // process_count
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    else:
        order = np.arange(num_examples)
    return order[process_index * per_host:(process_index + 1) * per_host]


class InputPipeline:
    """Iterator of per-host batches with a checkpointable position (see module docstring)."""

    def __init__(self, source, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 process_index: int = 0, process_count: int = 1, random_flip: bool = False,
                 num_epochs: int | None = None, prefetch: int = 2, num_threads: int = 4):
        n = len(source)
        if n == 0:
            raise ValueError("the dataset is empty: no example to train on")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if n < process_count:
            raise ValueError(f"{n} examples cannot be split over {process_count} processes")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source, self.batch_size, self.seed, self.shuffle = source, batch_size, seed, shuffle
        self.process_index, self.process_count = process_index, process_count
        self.random_flip, self.num_epochs = random_flip, num_epochs
        self.prefetch, self.num_threads = max(1, prefetch), max(1, num_threads)
        self.num_examples = n
        self.per_host = n // process_count
        self._seen = 0
        self._worker: _Prefetcher | None = None

    # ---- position -------------------------------------------------------------------------
    def state(self) -> dict[str, int]:
        """The position after the last batch returned (plus what it is only valid for)."""
        return {"examples_seen": self._seen, "seed": self.seed, "process_count": self.process_count,
                "num_examples": self.num_examples}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (from `state()`); the next batch starts at its next example."""
        for key in ("seed", "process_count", "num_examples"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(f"input position was saved with {key}={int(state[key])}, this pipeline has "
                                 f"{key}={getattr(self, key)}: cannot resume without repeating or skipping data")
        self.close()
        self._seen = int(state["examples_seen"])

    @property
    def steps_per_epoch(self) -> int:
        return self.per_host // self.batch_size

    # ---- iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self._worker is None:
            self._worker = _Prefetcher(self._batches(self._seen), self.prefetch)
        batch, seen = self._worker.get()
        self._seen = seen
        return batch

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _positions(self, start: int) -> Iterator[tuple[int, int]]:
        """(epoch, source index) for this host's examples from position `start` on."""
        k = start
        epoch, offset = divmod(k, self.per_host)
        while self.num_epochs is None or epoch < self.num_epochs:
            order = host_order(self.num_examples, epoch, self.seed, self.shuffle, self.process_index,
                               self.process_count)
            for index in order[offset:]:
                yield epoch, int(index)
            epoch, offset = epoch + 1, 0

    def _batches(self, start: int) -> Iterator[tuple[dict, int]]:
        positions = self._positions(start)
        seen = start
        with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
            while True:
                chunk = [p for _, p in zip(range(self.batch_size), positions)]
                if len(chunk) < self.batch_size:  # only with num_epochs: drop the last partial batch
                    return
                examples = list(pool.map(self._load, chunk))
                seen += self.batch_size
                yield _collate(examples), seen

    def _load(self, position: tuple[int, int]) -> dict:
        epoch, index = position
        example = dict(self.source[index])
        for key, value in example.items():
            if isinstance(value, bytes):
                example[key] = value.decode("utf-8")
        example["dataset_index"] = index
        if self.random_flip:
            if "video" not in example:
                raise ValueError("random_flip needs pixel examples ('video'); pre-computed latents cannot be flipped")
            if np.random.default_rng([self.seed, epoch, index, 1]).random() < 0.5:
                example["video"] = example["video"][:, :, ::-1]
        return example


def _collate(examples: list[dict]) -> dict:
    """List of example dicts -> dict of stacked arrays (strings stay a list)."""
    out = {}
    for key in examples[0]:
        values = [e[key] for e in examples]
        out[key] = values if isinstance(values[0], str) else np.stack([np.asarray(v) for v in values])
    return out


class _Prefetcher:
    """Runs a generator on a background thread, `depth` items ahead; re-raises its errors."""
    _DONE = object()

    def __init__(self, generator: Iterator, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._generator = generator
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._generator:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        item = self._queue.get()
        if item is self._DONE:
            self._queue.put(item)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
