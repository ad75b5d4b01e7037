"""TFDS builder for WebVid-style local data: a CSV of (videoid, name, page_dir) and a video folder.

    from animatediff_jax.data.webvid import WebVid, WebVidConfig
    config = WebVidConfig(name="webvid_256", csv_path="results_2M_val.csv", video_dir="videos/")
    WebVid(config=config, data_dir="/data/tfds").download_and_prepare()
    # -> ArrayRecord shards, read with `tfds.builder_from_directory(...).as_data_source()` (no TF).

Each row gives one example {"video": (frames, size, size, 3) uint8, "caption": str, "videoid": str},
the clip decoded by `video_clips.decode_clip` (16 frames at stride 4, short side resized and
centre-cropped to 256 by default; the window start is seeded per video, so builds are reproducible).
Videos are looked for at `video_dir/{videoid}.mp4`, then `video_dir/{page_dir}/{videoid}.mp4`.

Bad input never crashes a build: rows without a videoid or caption, duplicate ids, missing files,
unreadable/corrupt/too-short videos and undecodable codecs are skipped and counted; the counts are
printed and stored in the dataset's `metadata.json` (`builder.info.metadata["build_stats"]`: clips,
rows_usable, padded_clips, padded_videos, slowed_clips and skipped per reason). A clear error is
raised only when the CSV lacks the `videoid`/`name` columns or nothing usable is left, or fewer clips
than `num_shards` (the ArrayRecord files asked for; the CLI refuses more than the CSV's usable rows
before decoding, this catches videos that then fail to decode).

Short videos: by default (`min_frames` None: `frames`) a video with fewer than `frames` frames is
skipped as too_short, as the original AnimateDiff WebVid loader assumes every video has enough
frames. With a lower `min_frames` it gives a padded clip (some frames repeated: `padded_clips`, and
`padded_videos` {videoid: frames}); a video of at least `frames` but fewer than the window's
`(frames - 1) * stride + 1` frames gives a slowed clip (distinct frames closer than `stride`:
`slowed_clips`), as the original's sampling does. Both are printed in the closing summary.

The build's own lines (each video skipped or padded, the closing summary) go to stderr: `data.build`
drops the build's stdout, which holds TFDS's lines naming its temporary folder.

One clip per video (seeded window); a large CSV can be split and built as several variants.
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import os
import sys
import zlib
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from animatediff_jax.data.video_clips import VideoError, decode_clip, shortfall, window_length
from animatediff_jax.errors import InputError
from animatediff_jax.text_files import decode_text

REQUIRED_COLUMNS = ("videoid", "name")
BOM = "\ufeff"  # a byte-order mark, as decoded


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    videoid: str
    caption: str
    path: str


@dataclasses.dataclass(frozen=True)
class SkippedRow:
    """A CSV row not used: its line in the file, the reason (a `build_stats` "skipped" key), its videoid."""
    line: int
    reason: str
    videoid: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" + (f" (videoid {self.videoid})" if self.videoid else "")


def read_csv(csv_path: str, video_dir: str, name: str | None = None) -> tuple[list[VideoEntry], list[SkippedRow]]:
    """Usable rows of a WebVid CSV and the rows skipped, each with its reason.

    Raises InputError `<name>: <problem>` (`name`: the file's path by default) when the file is not UTF-8
    text or not CSV, or the `videoid` or `name` column is missing.
    """
    name = name or csv_path
    skipped: list[SkippedRow] = []
    entries: list[VideoEntry] = []
    seen: set[str] = set()
    reader = csv.DictReader(_text_lines(csv_path, name))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise InputError(f"{name}: missing CSV column(s) {missing}; found {columns} "
                             f"(expected videoid, name (caption) and optionally page_dir)")
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            videoid, caption = row.get("videoid", ""), row.get("name", "")
            path = _video_path(video_dir, videoid, row.get("page_dir", "")) if videoid else None
            reason = ("missing_videoid" if not videoid else "empty_caption" if not caption else
                      "duplicate_videoid" if videoid in seen else "missing_file" if path is None else None)
            if reason is not None:
                skipped.append(SkippedRow(reader.line_num, reason, videoid))
                continue
            seen.add(videoid)
            entries.append(VideoEntry(videoid, caption, path))
    except csv.Error as e:
        raise InputError(f"{name}: not a readable CSV (line {reader.reader.line_num}: {e})") from None
    return entries, skipped


def _text_lines(path: str, name: str) -> Iterator[str]:
    """The lines of file `path` as `open(path, newline="")` reads them, one at a time (a CSV may be large),
    a leading byte-order mark dropped (spreadsheets' "CSV UTF-8" export writes one); InputError
    `<name>: not UTF-8 text (byte 0xe9 at offset 27)` at the first byte that is not (`decode_text`)."""
    offset = 0
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        for line in f:
            data = line.encode("utf-8", "surrogateescape")  # the bytes read, undecodable ones included
            try:
                text = decode_text(data, offset)
            except ValueError as e:
                raise InputError(f"{name}: {e}") from None
            yield text.removeprefix(BOM) if offset == 0 else text
            offset += len(data)


def _video_path(video_dir: str, videoid: str, page_dir: str) -> str | None:
    for candidate in (os.path.join(video_dir, f"{videoid}.mp4"),
                      os.path.join(video_dir, page_dir, f"{videoid}.mp4") if page_dir else None):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


@dataclasses.dataclass(eq=False)
class WebVidConfig(tfds.core.BuilderConfig):
    """Where the data is and how clips are cut. `name` names the built variant (e.g. "webvid_256")."""
    csv_path: str = ""
    video_dir: str = ""
    frames: int = 16
    stride: int = 4
    size: int = 256
    min_frames: int | None = None  # videos with fewer decodable frames are skipped as too short (None: frames)
    seed: int = 0              # window starts are drawn from (seed, videoid)
    num_workers: int = 4       # decoding threads (PyAV releases the GIL)
    num_shards: int = 1        # ArrayRecord files asked for: fewer clips than that is refused


class WebVid(tfds.core.GeneratorBasedBuilder):
    """WebVid-style video-caption clips from local files (see module docstring)."""
    name = "webvid"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIG_CLASS = WebVidConfig

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"WebVid-style clips: {c.frames} frames, stride {c.stride}, {c.size}x{c.size}.",
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(c.frames, c.size, c.size, 3), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB),
                "caption": tfds.features.Text(),
                "videoid": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        if not c.csv_path or not c.video_dir:
            raise ValueError("WebVidConfig needs csv_path and video_dir")
        entries, skipped = read_csv(c.csv_path, c.video_dir)
        return {"train": self._generate_examples(entries, skipped)}

    def _generate_examples(self, entries, skipped_rows):
        c = self.builder_config
        for row in skipped_rows:
            print(f"webvid: skipping {c.csv_path} {row}", file=sys.stderr)
        skipped = collections.Counter(row.reason for row in skipped_rows)
        stats = {"rows_usable": len(entries), "clips": 0, "padded_clips": 0, "padded_videos": {}, "slowed_clips": 0,
                 "skipped": dict(skipped)}
        self.info.metadata["build_stats"] = stats
        min_frames = c.frames if c.min_frames is None else c.min_frames

        def load(entry: VideoEntry):
            rng = np.random.default_rng([c.seed, zlib.crc32(entry.videoid.encode())])
            try:
                return entry, decode_clip(entry.path, c.frames, c.stride, c.size, rng, min_frames), None
            except VideoError as e:
                return entry, None, e

        for entry, clip, error in _bounded_map(load, entries, max(1, c.num_workers)):
            if error is not None:
                skipped[error.reason] += 1
                stats["skipped"] = dict(skipped)
                print(f"webvid: skipping {error}", file=sys.stderr)
                continue
            kind = shortfall(clip.source_frames, c.frames, c.stride)
            if kind == "padded":
                stats["padded_videos"][entry.videoid] = clip.source_frames
                print(f"webvid: padding {entry.path}: {clip.source_frames} frames, fewer than the clip's {c.frames} "
                      f"(some repeat)", file=sys.stderr)
            if kind is not None:
                stats[f"{kind}_clips"] += 1
            stats["clips"] += 1
            yield entry.videoid, {"video": clip.video, "caption": entry.caption, "videoid": entry.videoid}
        if 0 < stats["clips"] < c.num_shards:  # known only now: the CSV's rows counted, some videos did not decode
            raise InputError(f"--num_shards {c.num_shards}: only {stats['clips']} clips could be decoded from "
                             f"{c.csv_path} (skipped: {dict(skipped)}); every ArrayRecord file needs a clip, so ask "
                             f"for at most {stats['clips']}")
        print(build_summary(stats, c.frames, c.stride), file=sys.stderr)
        if stats["clips"] == 0:
            raise InputError(f"{c.csv_path}: no usable video in {c.video_dir} "
                             f"(skipped: {dict(skipped) or 'the CSV has no rows'})")


def build_summary(stats: dict, frames: int, stride: int) -> str:
    """The closing line of a build from its `build_stats`: clips written, those padded or slowed from
    short videos (when any), and rows/videos skipped per reason."""
    def clips(n: int) -> str:
        return f"{n} clip{'s' * (n != 1)}"

    parts = [f"webvid: {clips(stats['clips'])} written"]
    if stats["padded_clips"]:
        parts.append(f"{clips(stats['padded_clips'])} padded from videos shorter than {frames} frames "
                     f"(see --min_frames)")
    if stats["slowed_clips"]:
        parts.append(f"{clips(stats['slowed_clips'])} slowed from videos shorter than the "
                     f"{window_length(frames, stride)}-frame window of {frames} frames at stride {stride}")
    parts.append(f"skipped {stats['skipped'] or 'none'}")
    return "; ".join(parts)


def _bounded_map(fn, items, workers: int):
    """`map(fn, items)` in order on a thread pool, at most 2 * workers results in flight."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
