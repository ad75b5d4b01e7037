"""Video files: GIF / MP4 (H.264) / PNG-frame writers, sample grids, and readers for video-to-video.

Frames are (F, H, W, 3): float in [0, 1] (clipped, rounded to uint8) or uint8. Every writer
writes to a temporary name next to the target and renames it into place, so a crash never
leaves a half-written file; an existing target is never replaced unless `overwrite=True`.
The same frames always give the same bytes (see `x264_options` for what that takes of libx264).
"""
from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from fractions import Fraction
from typing import Sequence

import numpy as np
from natsort import natsorted, ns

from animatediff_jax.errors import InputError
from animatediff_jax.outputs import refuse_unsafe_target, target

VIDEO_EXTENSIONS = (".gif", ".mp4")


# ----------------------------------------------------------------------------- frames

def to_uint8(frames) -> np.ndarray:
    """(F, H, W, 3) float in [0, 1] or uint8 -> uint8, checking the shape."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected frames shaped (F, H, W, 3) with F >= 1, got {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating) and frames.dtype.name != "bfloat16":
        raise ValueError(f"frames must be float in [0, 1] or uint8, got dtype {frames.dtype}")
    frames = frames.astype(np.float32)
    if not np.isfinite(frames).all():
        raise ValueError("frames contain NaN or inf")
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_grid(videos, cols: int | None = None, padding: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """Tile B videos (B, F, H, W, 3) into one video (F, H', W', 3), like torchvision's make_grid per
    frame (the original `save_videos_grid`): `cols` videos per row (default: all in one row),
    `padding` pixels of `pad_value` around each tile. Output dtype: uint8."""
    vids = [to_uint8(v) for v in videos]
    if not vids:
        raise ValueError("make_grid needs at least one video")
    if len({v.shape for v in vids}) != 1:
        raise ValueError(f"videos in a grid must share (F, H, W, 3); got {sorted({v.shape for v in vids})}")
    f, h, w, _ = vids[0].shape
    cols = len(vids) if cols is None else min(int(cols), len(vids))
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    rows = math.ceil(len(vids) / cols)
    fill = int(round(np.clip(pad_value, 0.0, 1.0) * 255))
    grid = np.full((f, rows * (h + padding) + padding, cols * (w + padding) + padding, 3), fill, np.uint8)
    for k, v in enumerate(vids):
        y, x = padding + (k // cols) * (h + padding), padding + (k % cols) * (w + padding)
        grid[:, y:y + h, x:x + w] = v
    return grid


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad H and W to even sizes by repeating the last row/column (yuv420p needs even sizes)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


# ----------------------------------------------------------------------------- atomic writes

def _check_target(path: str, overwrite: bool) -> str:
    """Where `path` is written (`outputs.target`: a symbolic link is written through), its parents made;
    refused as `outputs.check_output` refuses (`refuse_unsafe_target`: a device, FIFO or socket, the
    current folder) and, without `overwrite`, when it exists."""
    refuse_unsafe_target(path)
    real = target(path)
    if os.path.exists(real) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    os.makedirs(os.path.dirname(real), exist_ok=True)
    return real


def default_mode(folder: bool = False) -> int:
    """Permissions a new file (0o666) or folder (0o777) gets under the process umask, as `cp` gives
    (tempfile's 0o600/0o700 are for secrets, not for outputs)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def _temp_path(path: str) -> str:
    """A fresh temporary file next to `path`, with the same extension (writers pick formats by it)."""
    d, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{os.path.splitext(name)[1]}", dir=d)
    os.fchmod(fd, default_mode())
    os.close(fd)
    return tmp


def _commit(tmp: str, path: str, overwrite: bool) -> None:
    """Move a finished temporary file into place; without `overwrite`, never clobber (link is atomic)."""
    try:
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
        except OSError:  # filesystems without hard links
            if os.path.lexists(path):
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
            os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _atomic(write, path, overwrite: bool) -> str:
    path = os.fspath(path)
    real = _check_target(path, overwrite)
    tmp = _temp_path(real)
    try:
        write(tmp)
    except BaseException:
        os.unlink(tmp)
        raise
    _commit(tmp, real, overwrite)
    return path


# ----------------------------------------------------------------------------- writers

MAX_GIF_FPS = 50.0  # GIF delays are whole centiseconds, and players show a delay under 2 cs as 10 cs


def gif_durations_ms(num_frames: int, fps: float) -> list[int]:
    """Per-frame GIF delays in ms (multiples of 10: GIF stores centiseconds) that keep the running
    time exact to the centisecond: frame i lasts round(100 (i+1) / fps) - round(100 i / fps) cs
    (halves rounded up), so 8 fps alternates 130 / 120 ms and 16 frames last exactly 2000 ms.
    `fps` (frames per second) must be in (0, MAX_GIF_FPS], so that every delay is >= 20 ms."""
    if not 0 < fps <= MAX_GIF_FPS:
        raise ValueError(f"GIF fps must be in (0, {MAX_GIF_FPS:g}], got {fps}: GIF delays are whole "
                         "centiseconds and players show delays under 2 cs at 10 fps")
    ends_cs = np.floor(100.0 * np.arange(num_frames + 1) / fps + 0.5)
    return (10 * np.diff(ends_cs)).astype(int).tolist()


def write_gif(path, frames, fps: float = 8.0, loop: int = 0, overwrite: bool = False) -> str:
    """Animated GIF at `fps` in (0, 50] (8 as the original; delays from `gif_durations_ms`), looping
    forever (loop=0). Returns the path."""
    from PIL import Image

    frames = to_uint8(frames)
    durations = gif_durations_ms(len(frames), fps)
    images = [Image.fromarray(f) for f in frames]

    def write(tmp):
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                       loop=loop, optimize=False, disposal=1)
    return _atomic(write, path, overwrite)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """This machine's x86 CPU feature flags from /proc/cpuinfo (Linux); empty where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def x264_options(crf: int, cpu_flags: frozenset[str]) -> dict[str, str]:
    """libx264 options for byte-identical MP4s from identical frames, on a CPU with `cpu_flags`.

    threads=1: PyAV's defaults (thread_count 0, thread_type SLICE) have x264 cut each frame into one
    slice per CPU the encoding thread may run on (at most one per 64 px of height), so the bytes
    changed with the machine and the CPU affinity; slices also cost compression. Small videos lose
    nothing (x264 uses one thread up to 112 px of height anyway); 16 frames of 512x512 take ~0.45 s.
    asm=AVX2 where the CPU has AVX-512: x264's AVX-512 mbtree_propagate_list (x264 core 164
    source; PyAV 18.1 ships core 165) handles a row's macroblocks 8 at a time without stopping at
    the row's end, so unless ceil(width / 16 px) is a multiple of 8 (e.g. 128, 256, 512 px) it adds
    costs read beyond the row, on the last row from memory beyond the arrays, and the output
    depended on what the heap held. Its AVX2 code gives the bytes its SSE4.2 code gives."""
    options = {"crf": str(int(crf)), "threads": "1"}
    if "avx512f" in cpu_flags:
        options["x264-params"] = "asm=AVX2"
    return options


def write_mp4(path, frames, fps: float = 8.0, crf: int = 18, overwrite: bool = False) -> str:
    """H.264 MP4 (yuv420p, plays everywhere; odd sizes padded to even) via PyAV, `crf` quality
    (lower: better, 18: visually lossless). The same frames give the same bytes (see
    `x264_options`). Returns the path."""
    import av

    frames = _even(to_uint8(frames))
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")

    def write(tmp):
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = x264_options(crf, _cpu_flags())
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            container.mux(stream.encode())
    return _atomic(write, path, overwrite)


def write_png_frames(directory, frames, overwrite: bool = False) -> str:
    """One PNG per frame, `directory/00000.png`, ... (lossless). The folder appears complete or not
    at all; `overwrite` replaces an existing folder. Returns the directory."""
    from PIL import Image

    frames = to_uint8(frames)
    directory = _check_target(os.fspath(directory), overwrite)
    parent, name = os.path.split(directory)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, default_mode(folder=True))
        for k, f in enumerate(frames):
            Image.fromarray(f).save(os.path.join(tmp, f"{k:05d}.png"))
        if os.path.lexists(directory):
            if not overwrite:  # appeared while we wrote
                raise FileExistsError(f"{directory} already exists; pass overwrite=True to replace it")
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=parent)
            os.rename(directory, os.path.join(old, name))  # move the old folder aside, then swap
            os.rename(tmp, directory)
            shutil.rmtree(old)
        else:
            os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def write_video(path, frames, fps: float = 8.0, overwrite: bool = False) -> str:
    """GIF or MP4 by the extension of `path`; a path without extension gets a PNG-frame folder."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".gif":
        return write_gif(path, frames, fps=fps, overwrite=overwrite)
    if ext == ".mp4":
        return write_mp4(path, frames, fps=fps, overwrite=overwrite)
    if ext == "":
        return write_png_frames(path, frames, overwrite=overwrite)
    raise ValueError(f"{path}: unsupported video extension {ext!r}; use .gif, .mp4 or a folder name")


def write_grid(path, videos, cols: int | None = None, fps: float = 8.0, padding: int = 2,
               overwrite: bool = False) -> str:
    """A grid of several videos (see `make_grid`) written as GIF / MP4 / PNG frames."""
    return write_video(path, make_grid(videos, cols=cols, padding=padding), fps=fps, overwrite=overwrite)


# ----------------------------------------------------------------------------- readers

def _read_gif(path: str) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def _read_av(path: str) -> np.ndarray:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def frame_names(names) -> list[str]:
    """The image files of a frames folder's listing in frame order: natural order, so `1.png, 2.png, ...,
    10.png` (ffmpeg's `%d.png`) read as numbered, not as text (`1, 10, 2`); zero-padded names sort the
    same either way. Hidden files and other suffixes than `FRAME_SUFFIXES` are left out."""
    return natsorted((n for n in names if n.lower().endswith(FRAME_SUFFIXES) and not n.startswith(".")),
                     alg=ns.PATH)


def _read_png_dir(path: str) -> np.ndarray:
    from PIL import Image

    names = frame_names(os.listdir(path))
    if not names:
        raise ValueError(f"folder holds no frames ({'/'.join(s[1:] for s in FRAME_SUFFIXES)} files)")
    frames = []
    for name in names:
        with Image.open(os.path.join(path, name)) as im:
            frames.append(np.asarray(im.convert("RGB")))
        if frames[-1].shape != frames[0].shape:
            raise ValueError(f"frame {name} is {frames[-1].shape[1]}x{frames[-1].shape[0]}, the first ({names[0]}) "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}: a folder's frames must share one size")
    return np.stack(frames)


def read_video(path, num_frames: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a GIF, a video file (MP4, WebM, ... via PyAV) or a folder of frames into (F, H, W, 3)
    float32 in [0, 1]: `fit_frames(read_frames(path), num_frames, size)`."""
    return fit_frames(read_frames(path), num_frames, size)


def read_frames(path) -> np.ndarray:
    """The frames of a GIF, a video file (MP4, WebM, ... via PyAV) or a folder of frames, (F, H, W, 3)
    uint8. A file that is not a readable video (or has no frames) is an InputError naming it; a
    missing one a FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"video not found: {path}")
    try:
        if os.path.isdir(path):
            frames = _read_png_dir(path)
        elif path.lower().endswith(".gif"):
            frames = _read_gif(path)
        else:
            frames = _read_av(path)
    except (OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        reason = getattr(e, "strerror", None) or str(e)  # FFmpeg's message without its errno and the path again
        raise InputError(f"{path}: cannot read as a video ({reason})") from None
    if frames.shape[0] == 0:
        raise InputError(f"{path}: no frames")
    return frames


def fit_frames(frames: np.ndarray, num_frames: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 frames (F, H, W, 3) -> float32 in [0, 1]; `num_frames`: resampled uniformly in time to
    that many frames; `size`: (height, width) every frame is resized to (bicubic)."""
    if num_frames is not None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        frames = frames[np.round(np.linspace(0, frames.shape[0] - 1, num_frames)).astype(np.int64)]
    if size is not None:
        frames = resize_frames(frames, size)
    return frames.astype(np.float32) / 255.0


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 frames (F, H, W, 3) to (height, width) = `size`, bicubic."""
    from PIL import Image

    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in to_uint8(frames)])


def sample_paths(directory, stem: str, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> dict[str, str]:
    """Free output paths `directory/stem{ext}` for each extension, numbered `stem-1`, `stem-2`, ...
    when any of them exists already (so earlier runs are never overwritten)."""
    directory = os.fspath(directory)
    k = 0
    while True:
        name = stem if k == 0 else f"{stem}-{k}"
        paths = {ext: os.path.join(directory, name + ext) for ext in extensions}
        if not any(os.path.lexists(p) for p in paths.values()):
            return paths
        k += 1
