"""Tiny real video files for the data tests, written with PyAV."""
import av
import numpy as np


def write_mp4(path, video: np.ndarray, fps: int = 8, faststart: bool = False) -> None:
    """Encode (F, H, W, 3) uint8 frames as an MPEG-4 Part 2 .mp4 (H, W even); `faststart` puts the
    index (with the frame count) before the frames."""
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.gop_size = 1  # intra-only: flat frames decode to their exact level
        stream.options = {"qscale": "1"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def ramp_video(num_frames: int, height: int, width: int, base: int = 20, step: int = 3) -> np.ndarray:
    """Flat grey frames whose level encodes the frame number: level(i) = base + step * i."""
    levels = (base + step * np.arange(num_frames)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def write_empty_mp4(path) -> None:
    """An .mp4 with a header but no frame at all."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=8)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()
