"""Decode a training clip from a video file with PyAV: frame sampling, short-side resize, centre crop.

    clip = read_clip("v.mp4", frames=16, stride=4, size=256, rng=np.random.default_rng(0))
    # (16, 256, 256, 3) uint8

Frame sampling follows the original AnimateDiff WebVid loader: a window of
`(frames - 1) * stride + 1` source frames (or the whole video when it is shorter) starts at a
random position, and `frames` indices are spread evenly over it (`linspace`, truncated to int), so
a short video yields a slowed-down clip instead of being dropped, and one with fewer than `frames`
frames a padded clip (some frames repeated); `shortfall` names which, `decode_clip` returns the
source length so a caller can count them. Every failure is a `VideoError` whose `reason` is a short
key that build statistics count ("unreadable", "no_video_stream", "too_short", "decode_error").
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np


class VideoError(Exception):
    """A video that cannot give a clip; `reason` is a short statistics key, the message names the file."""

    def __init__(self, reason: str, path: str, detail: str = ""):
        super().__init__(f"{path}: {reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.path = path


def window_length(frames: int, stride: int) -> int:
    """Source frames a clip of `frames` frames `stride` apart spans: (frames - 1) * stride + 1."""
    return (frames - 1) * stride + 1


def shortfall(num_frames: int, frames: int, stride: int) -> str | None:
    """How a video of `num_frames` frames falls short of a clip's window, as `frame_indices` samples it:
    "padded" (fewer than `frames`: some source frames repeat), "slowed" (fewer than `window_length`:
    distinct frames, closer than `stride` apart) or None (a full window)."""
    if num_frames < frames:
        return "padded"
    if num_frames < window_length(frames, stride):
        return "slowed"
    return None


def frame_indices(num_frames: int, frames: int, stride: int, start_fraction: float) -> np.ndarray:
    """(frames,) int source indices: a `stride`-spaced window, or spread over a shorter video.

    `start_fraction` in [0, 1) picks the window start among the valid starts.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one source frame, got {num_frames}")
    window = min(num_frames, window_length(frames, stride))
    start = int(start_fraction * (num_frames - window + 1))
    return np.linspace(start, start + window - 1, frames, dtype=int)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after resizing the short side to `size` (aspect ratio kept, long side rounded)."""
    if height <= width:
        return size, max(size, int(round(width * size / height)))
    return max(size, int(round(height * size / width))), size


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) -> (size, size, C), the centre of the frame."""
    h, w = frame.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return frame[top:top + size, left:left + size]


def _count_frames(container, stream) -> int:
    """Frames in the stream: the container's count, else counted from the demuxed packets."""
    if stream.frames:
        return int(stream.frames)
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count


class DecodedClip(NamedTuple):
    """A clip and the length of the video its frames were sampled from (`shortfall(source_frames, ...)`
    tells whether it is padded or slowed)."""
    video: np.ndarray  # (frames, size, size, 3) uint8 RGB
    source_frames: int


def read_clip(path: str, frames: int = 16, stride: int = 4, size: int = 256,
              rng: np.random.Generator | None = None, min_frames: int = 1,
              interpolation: str = "BILINEAR") -> np.ndarray:
    """(frames, size, size, 3) uint8 RGB clip from the video file at `path`: `decode_clip`'s video."""
    return decode_clip(path, frames, stride, size, rng, min_frames, interpolation).video


def decode_clip(path: str, frames: int = 16, stride: int = 4, size: int = 256,
                rng: np.random.Generator | None = None, min_frames: int = 1,
                interpolation: str = "BILINEAR") -> DecodedClip:
    """The clip of `frames` frames from the video file at `path` and the video's length it was sampled from.

    The window start is drawn from `rng` (centre of the video when None). Videos with fewer than
    `min_frames` decodable frames raise `VideoError("too_short")`; shorter than `frames` frames, they
    give a padded clip (`shortfall`).
    """
    import av  # PyAV: the `data` extra

    if not os.path.isfile(path):
        raise VideoError("missing_file", path)
    try:
        container = av.open(path)
    except Exception as e:  # any demuxer failure: corrupt header, not a media file, ...
        raise VideoError("unreadable", path, str(e)) from None
    try:
        if not container.streams.video:
            raise VideoError("no_video_stream", path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            total = _count_frames(container, stream)
        except Exception as e:
            raise VideoError("unreadable", path, str(e)) from None
        if total < max(1, min_frames):
            raise VideoError("too_short", path, f"{total} frames, need at least {max(1, min_frames)}")
        fraction = 0.5 if rng is None else float(rng.random())
        clip, decoded = _decode(container, stream, frame_indices(total, frames, stride, fraction), size,
                                interpolation, path)
        if clip is None:  # the container over-reported its length: sample again from what decodes
            if decoded < max(1, min_frames):
                raise VideoError("too_short", path, f"{decoded} decodable frames, need at least {max(1, min_frames)}")
            container.seek(0)
            total = decoded
            clip, _ = _decode(container, stream, frame_indices(total, frames, stride, fraction), size,
                              interpolation, path)
            if clip is None:
                raise VideoError("decode_error", path, "frames stopped decoding on a second pass")
    finally:
        container.close()
    return DecodedClip(clip, total)


def _decode(container, stream, wanted: np.ndarray, size: int, interpolation: str,
            path: str) -> tuple[np.ndarray | None, int]:
    """(clip, frames decoded): decode sequentially up to the last wanted index, converting only the
    wanted frames. clip is None when the stream ends before the last wanted frame."""
    out = np.empty((len(wanted), size, size, 3), np.uint8)
    filled = decoded = 0
    try:
        for i, frame in enumerate(container.decode(stream)):
            decoded = i + 1
            if i < wanted[filled]:
                continue
            h, w = resized_shape(frame.height, frame.width, size)
            rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation=interpolation).to_ndarray()
            image = center_crop(rgb, size)
            while filled < len(wanted) and wanted[filled] == i:  # repeated indices of a short video
                out[filled] = image
                filled += 1
            if filled == len(wanted):
                return out, decoded
    except Exception as e:  # corrupt packets, unsupported codec, ...
        raise VideoError("decode_error", path, str(e)) from None
    return None, decoded
