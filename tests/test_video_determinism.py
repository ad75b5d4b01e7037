"""Video writers give the same bytes for the same frames (MP4 via libx264 included), and GIF frame
delays keep the running time exact to the centisecond."""
import os

import numpy as np
import pytest
from PIL import Image, ImageSequence

from animatediff_jax import video as V


def _moving(frames, h, w, seed=0):
    """A float video in [0, 1] (F, H, W, 3): drifting waves and stripes plus light noise from `seed`,
    so x264's lookahead finds motion and uses B-frames (where its AVX-512 code misbehaved)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    video = []
    for t in range(frames):
        r = 0.5 + 0.5 * np.sin(8 * x + 0.4 * t) * np.cos(6 * y - 0.3 * t)
        g = 0.5 + 0.5 * np.sin(5 * (x + y) + 0.7 * t)
        b = (x * w + 3 * t) // 8 % 2 * 0.8
        video.append(np.stack([r, g, b], -1) + rng.normal(0.0, 0.03, (h, w, 3)))
    return np.clip(np.stack(video), 0.0, 1.0).astype(np.float32)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("height, width", [(32, 32), (64, 64), (96, 160)])
def test_mp4_same_frames_same_bytes(tmp_path, height, width):
    """Write the same video again after other videos of its size, as a sampling run does: the freed
    encoder memory then holds their data, which x264's AVX-512 code read (before x264_options, on
    an AVX-512 CPU, 64x64 and 96x160 gave a different file in most rounds; 32x32 rarely)."""
    frames = _moving(16, height, width)
    first = _read(V.write_mp4(tmp_path / "first.mp4", frames))
    for seed in range(1, 5):
        V.write_mp4(tmp_path / f"other{seed}.mp4", _moving(16, height, width, seed=seed))
        assert _read(V.write_mp4(tmp_path / f"again{seed}.mp4", frames)) == first, f"round {seed}"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and at least 2 CPUs")
def test_mp4_bytes_do_not_depend_on_cpu_count(tmp_path):
    """x264 used one slice per CPU it may run on (128 px height allows 2), so bytes changed with it."""
    frames = _moving(16, 128, 128)
    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cpus)})
        one_cpu = _read(V.write_mp4(tmp_path / "one.mp4", frames))
    finally:
        os.sched_setaffinity(0, cpus)
    assert _read(V.write_mp4(tmp_path / "all.mp4", frames)) == one_cpu


def test_x264_options_avoid_avx512_only_where_present():
    assert V.x264_options(18, frozenset({"sse4_2", "avx2", "avx512f"})) == {
        "crf": "18", "threads": "1", "x264-params": "asm=AVX2"}
    assert V.x264_options(23, frozenset({"sse4_2", "avx2"})) == {"crf": "23", "threads": "1"}
    assert V.x264_options(18, frozenset()) == {"crf": "18", "threads": "1"}  # no /proc/cpuinfo, ARM


def test_gif_same_frames_same_bytes(tmp_path):
    frames = _moving(8, 32, 32)
    first = _read(V.write_gif(tmp_path / "first.gif", frames))
    V.write_gif(tmp_path / "other.gif", _moving(8, 32, 32, seed=1))
    assert _read(V.write_gif(tmp_path / "again.gif", frames)) == first


def _gif_durations(path):
    with Image.open(path) as im:
        return [frame.info["duration"] for frame in ImageSequence.Iterator(im)]


def test_gif_delays_exact_at_8_fps(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    durations = _gif_durations(V.write_gif(tmp_path / "a.gif", frames, fps=8))
    assert durations == [130, 120] * 8  # was 120 each: 1920 ms, 8.33 fps
    assert sum(durations) == 2000
    grid = V.write_grid(tmp_path / "grid.gif", [frames, frames], fps=8)
    assert _gif_durations(grid) == durations


@pytest.mark.parametrize("fps", [0.5, 7.5, 8, 12, 24, 25, 30, 48, 50])
def test_gif_durations_track_real_time(fps):
    durations = np.array(V.gif_durations_ms(60, fps))
    assert (durations % 10 == 0).all() and (durations >= 20).all()
    ends = np.cumsum(durations)
    exact = 1000.0 * np.arange(1, 61) / fps
    assert np.abs(ends - exact).max() <= 5.0  # every frame ends within half a centisecond


def test_gif_refuses_fps_it_cannot_store(tmp_path):
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    for fps in (50.5, 60, 0, -8, float("nan")):
        with pytest.raises(ValueError, match=r"GIF fps must be in \(0, 50\]"):
            V.write_gif(tmp_path / "a.gif", frames, fps=fps)
    with pytest.raises(ValueError, match=r"\(0, 50\]"):
        V.write_grid(tmp_path / "grid.gif", [frames], fps=60)
    assert os.listdir(tmp_path) == []  # refused before any file was made
    V.write_video(tmp_path / "fast.mp4", frames, fps=60)  # MP4 has no such limit
