"""GIF / MP4 / PNG / grid writers and the readers: round trips, no overwriting, atomic writes."""
import os

import av
import numpy as np
import pytest
from PIL import Image

from animatediff_jax import video as V


def _smooth(frames=5, h=20, w=18):
    """A float video in [0, 1] (F, H, W, 3): gradients drifting over time."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([0.2 + 0.6 * x / w, 0.1 + 0.8 * y / h, np.full((h, w), 0.1 + 0.8 * f / frames)], -1)
                     for f in range(frames)]).astype(np.float32)


def _few_colours(frames=4, h=12, w=10, seed=0):
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    return palette[rng.integers(0, 16, (frames, h, w))]


def test_gif_round_trip(tmp_path):
    exact = _few_colours()
    path = V.write_gif(tmp_path / "a.gif", exact)
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.info["loop"] == 0 and im.info["duration"] in (120, 130)  # 8 fps
    back = V.read_video(path)
    assert back.shape == (4, 12, 10, 3) and back.dtype == np.float32
    np.testing.assert_array_equal(np.round(back * 255).astype(np.uint8), exact)  # <= 256 colours: lossless
    smooth = _smooth()
    back = V.read_video(V.write_gif(tmp_path / "b.gif", smooth, fps=4))
    assert back.shape == smooth.shape and np.abs(back - smooth).mean() < 3 / 255  # palette quantisation


def test_mp4_h264_odd_size(tmp_path):
    frames = _smooth(frames=9, h=33, w=47)
    path = V.write_mp4(tmp_path / "a.mp4", frames, fps=8)
    with av.open(path) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert s.average_rate == 8
    back = V.read_video(path)
    assert back.shape == (9, 34, 48, 3)  # padded to even sizes, edge-replicated
    assert np.abs(back[:, :33, :47] - frames).mean() < 3 / 255


def test_png_frames_round_trip_and_replace(tmp_path):
    frames = _smooth(frames=3)
    d = V.write_png_frames(tmp_path / "frames", frames)
    assert sorted(os.listdir(d)) == ["00000.png", "00001.png", "00002.png"]
    np.testing.assert_array_equal(np.round(V.read_video(d) * 255).astype(np.uint8), V.to_uint8(frames))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        V.write_png_frames(d, frames[:1])
    V.write_png_frames(d, frames[:1], overwrite=True)
    assert os.listdir(d) == ["00000.png"]
    assert sorted(os.listdir(tmp_path)) == ["frames"]  # no temporary folders left behind


def test_grid_tiles_like_save_videos_grid(tmp_path):
    vids = np.stack([_few_colours(seed=k) for k in range(3)])  # (B=3, F, H, W, 3)
    grid = V.make_grid(vids, cols=2)
    f, h, w = vids.shape[1:4]
    assert grid.shape == (f, 2 * (h + 2) + 2, 2 * (w + 2) + 2, 3)
    for k in range(3):
        y, x = 2 + (k // 2) * (h + 2), 2 + (k % 2) * (w + 2)
        np.testing.assert_array_equal(grid[:, y:y + h, x:x + w], vids[k])
    mask = np.ones(grid.shape[1:3], bool)
    for k in range(3):
        y, x = 2 + (k // 2) * (h + 2), 2 + (k % 2) * (w + 2)
        mask[y:y + h, x:x + w] = False
    assert (grid[:, mask] == 0).all()  # padding and the empty fourth cell
    path = V.write_grid(tmp_path / "grid.gif", list(vids), cols=2)
    np.testing.assert_array_equal(np.round(V.read_video(path) * 255).astype(np.uint8), grid)
    with pytest.raises(ValueError, match="share"):
        V.make_grid([vids[0], vids[0][:, :5]])


@pytest.mark.parametrize("ext", [".gif", ".mp4"])
def test_no_overwrite_unless_asked(tmp_path, ext):
    path = tmp_path / f"v{ext}"
    V.write_video(path, _few_colours(seed=1))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        V.write_video(path, _few_colours(seed=2))
    assert path.read_bytes() == before
    V.write_video(path, _few_colours(seed=2), overwrite=True)
    assert path.read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == [f"v{ext}"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(arr, format):  # noqa: A002 - PyAV's keyword
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(arr, format=format)

    real = av.VideoFrame.from_ndarray
    monkeypatch.setattr(av.VideoFrame, "from_ndarray", staticmethod(failing))
    with pytest.raises(RuntimeError, match="disk full"):
        V.write_mp4(tmp_path / "a.mp4", _smooth())
    monkeypatch.undo()

    saves = []
    real_save = Image.Image.save

    def failing_save(self, fp, *a, **k):
        saves.append(1)
        if len(saves) == 2:
            raise OSError("disk full")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        V.write_png_frames(tmp_path / "frames", _smooth())
    assert os.listdir(tmp_path) == []


def test_read_resample_resize_and_errors(tmp_path):
    frames = _few_colours(frames=5)
    path = V.write_gif(tmp_path / "a.gif", frames)
    back = V.read_video(path, num_frames=3)
    np.testing.assert_array_equal(np.round(back * 255).astype(np.uint8), frames[[0, 2, 4]])
    assert V.read_video(path, num_frames=8, size=(16, 8)).shape == (8, 16, 8, 3)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        V.read_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="junk.mp4"):
        V.read_video(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        V.write_gif(tmp_path / "b.gif", np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="unsupported video extension"):
        V.write_video(tmp_path / "b.avi", frames)
    with pytest.raises(ValueError, match="NaN"):
        V.to_uint8(np.full((1, 2, 2, 3), np.nan, np.float32))


def test_sample_paths_never_reuse(tmp_path):
    first = V.sample_paths(tmp_path, "sample")
    assert first == {".gif": str(tmp_path / "sample.gif"), ".mp4": str(tmp_path / "sample.mp4")}
    V.write_gif(first[".gif"], _few_colours())
    assert V.sample_paths(tmp_path, "sample")[".mp4"] == str(tmp_path / "sample-1.mp4")


def test_a_frames_folder_reads_in_numeric_order_and_names_a_bad_frame(tmp_path):
    # ffmpeg's `%d.png` writes 1.png ... 12.png: read as text they would come 1, 10, 11, 12, 2, ...
    folder = tmp_path / "numbered"
    folder.mkdir()
    for i in range(1, 13):
        suffix = ".webp" if i == 7 else ".png"  # any image format Pillow reads, lossless here
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(folder / f"{i}{suffix}", lossless=True)
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")  # e.g. an editor's or a sync tool's leftovers
    np.testing.assert_array_equal(V.read_frames(folder)[:, 0, 0, 0], [10 * i for i in range(1, 13)])

    Image.new("RGB", (8, 6)).save(folder / "13.png")
    with pytest.raises(ValueError, match=r"numbered: cannot read as a video \(frame 13.png is 8x6, the first "
                                         r"\(1.png\) 8x8: a folder's frames must share one size\)"):
        V.read_frames(folder)
    with pytest.raises(ValueError, match="empty: cannot read as a video .folder holds no frames .png/jpg/jpeg/webp"):
        (tmp_path / "empty").mkdir()
        V.read_frames(tmp_path / "empty")
