"""Decoding clips with PyAV: frame sampling as the original, resize + centre crop, failures named."""
import numpy as np
import pytest

from animatediff_jax.data.video_clips import (VideoError, decode_clip, frame_indices, read_clip, resized_shape,
                                               shortfall)
from tests.data.video_files import ramp_video, write_empty_mp4, write_mp4


def test_frame_indices_stride_and_short_videos():
    np.testing.assert_array_equal(frame_indices(100, 4, 3, 0.0), [0, 3, 6, 9])
    np.testing.assert_array_equal(frame_indices(100, 4, 3, 0.999), [90, 93, 96, 99])
    # Shorter than the window: spread evenly over the whole video (as the original's linspace).
    np.testing.assert_array_equal(frame_indices(5, 16, 4, 0.7), np.linspace(0, 4, 16, dtype=int))
    np.testing.assert_array_equal(frame_indices(1, 3, 4, 0.2), [0, 0, 0])
    with pytest.raises(ValueError):
        frame_indices(0, 16, 4, 0.0)


def test_shortfall_names_padded_and_slowed_clips():
    """16 frames at stride 4 span 61 source frames: fewer than 16 repeat some, 16..60 are closer than stride."""
    assert [shortfall(n, 16, 4) for n in (1, 15, 16, 60, 61, 500)] == ["padded", "padded", "slowed", "slowed",
                                                                       None, None]
    assert shortfall(16, 16, 1) is None
    for n in (3, 15, 16, 40, 61):  # as frame_indices samples: padded iff a frame repeats, slowed iff closer
        steps = np.diff(frame_indices(n, 16, 4, 0.5))
        assert shortfall(n, 16, 4) == ("padded" if (steps == 0).any() else "slowed" if (steps < 4).any() else None)


def test_resized_shape():
    assert resized_shape(48, 64, 32) == (32, 43)
    assert resized_shape(80, 40, 20) == (40, 20)


@pytest.mark.parametrize("hw", [(48, 64), (64, 40)])
def test_read_clip_samples_the_right_frames(tmp_path, hw):
    path = tmp_path / "ramp.mp4"
    write_mp4(path, ramp_video(20, *hw, step=11))
    clip = read_clip(str(path), frames=5, stride=3, size=24, rng=np.random.default_rng(1))
    assert clip.shape == (5, 24, 24, 3) and clip.dtype == np.uint8
    source = np.rint((clip.astype(float).mean(axis=(1, 2, 3)) - 20) / 11)  # decoded source frame number
    assert np.all(np.diff(source) == 3) and 0 <= source[0] and source[-1] <= 19, source


def test_short_video_is_spread_and_min_frames_rejects(tmp_path):
    path = tmp_path / "short.mp4"
    write_mp4(path, ramp_video(3, 32, 32, step=30))
    clip = read_clip(str(path), frames=8, stride=4, size=16)
    source = np.rint((clip.astype(float).mean(axis=(1, 2, 3)) - 20) / 30)
    np.testing.assert_array_equal(source, np.linspace(0, 2, 8, dtype=int))
    decoded = decode_clip(str(path), frames=8, stride=4, size=16)
    assert decoded.source_frames == 3 and np.array_equal(decoded.video, clip)
    with pytest.raises(VideoError, match="too_short") as e:
        read_clip(str(path), frames=8, stride=4, size=16, min_frames=4)
    assert e.value.reason == "too_short" and "short.mp4" in str(e.value)


def test_broken_files_raise_video_error(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 3)
    empty = tmp_path / "empty.mp4"
    write_empty_mp4(empty)
    reasons = {}
    for p in (corrupt, empty, tmp_path / "absent.mp4"):
        with pytest.raises(VideoError) as e:
            read_clip(str(p), frames=4, stride=1, size=16)
        reasons[p.name] = e.value.reason
        assert p.name in str(e.value)
    assert reasons == {"corrupt.mp4": "unreadable", "empty.mp4": "no_video_stream", "absent.mp4": "missing_file"}


def test_truncated_file_that_over_reports_its_length(tmp_path):
    """A cut-off download: the index promises 20 frames, fewer decode; sample from what decodes."""
    video = ramp_video(20, 64, 64, base=60, step=8).astype(np.int16)
    video = np.clip(video + np.random.default_rng(0).integers(-40, 41, (64, 64, 1)), 0, 255).astype(np.uint8)
    path = tmp_path / "cut.mp4"
    write_mp4(path, video, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    clip = read_clip(str(path), frames=5, stride=4, size=32, rng=np.random.default_rng(0))
    assert clip.shape == (5, 32, 32, 3)
    source = np.rint((clip.astype(float).mean(axis=(1, 2, 3)) - 60) / 8)
    assert source[0] == 0 and np.all(np.diff(source) >= 0) and source[-1] < 10
    # the length the frames were sampled from: what decoded, not the index's 20
    decoded = decode_clip(str(path), frames=5, stride=4, size=32, rng=np.random.default_rng(0))
    assert source[-1] < decoded.source_frames < 20 and np.array_equal(decoded.video, clip)
    with pytest.raises(VideoError, match="too_short"):
        read_clip(str(path), frames=5, stride=4, size=32, min_frames=15)
