"""Scores for videos of the procedural world, measured from the pixels.

The world is synthetic, so what a frame shows can be read off it directly:
- the object is the set of saturated (or near-white) pixels — every background is muted;
- its colour is the nearest of the world's object colours to the mean object pixel;
- its track is the per-frame centroid; the direction of motion is the dominant axis and sign of
  the least-squares velocity;
- the background style ("domain") is predicted by a nearest-centroid classifier over the frame's
  pooled power spectrum, fitted on images of the dataset itself (`StyleClassifier.fit`).

All functions take float frames in [0, 1] shaped (F, H, W, 3) (or uint8).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from animatediff_jax.data import procedural

_COLOR_NAMES = list(procedural.COLORS)
_COLOR_TABLE = np.asarray(list(procedural.COLORS.values()), np.float32) / 255.0  # (K, 3)
_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def _as_float(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    return video.astype(np.float32) / 255.0 if video.dtype == np.uint8 else video.astype(np.float32)


def object_mask(frames: np.ndarray, saturation: float = 0.30, white: float = 0.75) -> np.ndarray:
    """(..., H, W) bool: pixels that belong to the object (saturated, or bright near-white)."""
    x = _as_float(frames)
    spread = x.max(-1) - x.min(-1)
    return (spread > saturation) | (x.min(-1) > white)


@dataclass(frozen=True)
class Track:
    """What one video shows, frame by frame."""
    present: np.ndarray    # (F,) bool: an object was found
    centres: np.ndarray    # (F, 2) centroid (x, y) in pixels (nan where absent)
    areas: np.ndarray      # (F,) object pixel count
    colors: list           # (F,) nearest object colour name (None where absent)


def track(video: np.ndarray, min_area: int = 3) -> Track:
    """Object centroid, area and colour in every frame of `video` (F, H, W, 3)."""
    x = _as_float(video)
    masks = object_mask(x)
    frames, h, w = masks.shape
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.full((frames, 2), np.nan, np.float64)
    colors: list = [None] * frames
    areas = masks.reshape(frames, -1).sum(-1)
    present = areas >= min_area
    for f in np.flatnonzero(present):
        m = masks[f]
        centres[f] = (xx[m].mean(), yy[m].mean())
        mean_rgb = x[f][m].mean(0)
        colors[f] = _COLOR_NAMES[int(np.argmin(((_COLOR_TABLE - mean_rgb) ** 2).sum(-1)))]
    return Track(present, centres, areas, colors)


def direction_of(t: Track, min_travel: float = 2.0) -> str | None:
    """The captioned direction the object moves in, or None if it does not travel `min_travel` px."""
    idx = np.flatnonzero(t.present)
    if len(idx) < 2:
        return None
    frames = idx.astype(np.float64)
    velocity = [np.polyfit(frames, t.centres[idx, k], 1)[0] for k in (0, 1)]  # px / frame
    travel = np.asarray(velocity) * (idx[-1] - idx[0])
    if np.abs(travel).max() < min_travel:
        return None
    return max(_DIRECTIONS, key=lambda d: float(np.dot(_DIRECTIONS[d], travel)))


def consistency(t: Track, max_jump: float = 3.0) -> float:
    """Fraction of frames showing the same object: present, same colour as the video's majority, area
    within a factor 2 of the median area, and (after the first) centroid within `max_jump` px of the
    previous frame's. The world's objects move at most 1.5 px/frame at 32 px, so frames denoised
    independently (an object at a new place each frame) fail the last test."""
    idx = np.flatnonzero(t.present)
    if len(idx) == 0:
        return 0.0
    names = [t.colors[i] for i in idx]
    majority = _majority(names)
    median = np.median(t.areas[idx])
    ok = 0
    for k, i in enumerate(idx):
        near = k == 0 or (i == idx[k - 1] + 1 and np.linalg.norm(t.centres[i] - t.centres[idx[k - 1]]) <= max_jump)
        ok += t.colors[i] == majority and median / 2 <= t.areas[i] <= median * 2 and near
    return float(ok) / len(t.present)


def _majority(names: list[str]) -> str:
    """The most frequent name; a tie goes to the one seen first (frame order). Not `max(set(names), ...)`:
    a set's order follows string hashing, which Python randomizes per process, so tied videos scored
    differently from run to run (issue 15: evaluation tables differed by up to 3 of 32 per cell)."""
    return Counter(names).most_common(1)[0][0]


def majority_color(t: Track) -> str | None:
    """The colour of most frames showing the object (ties: the first seen), or None if it never shows."""
    names = [c for c in t.colors if c is not None]
    return _majority(names) if names else None


def spectrum_features(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    """(N, bins*bins) log power spectrum of each grey frame, pooled into bins×bins blocks."""
    x = _as_float(frames)
    grey = x.mean(-1)
    grey = grey - grey.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey), axes=(-2, -1))) ** 2
    n, h, w = power.shape
    pooled = power.reshape(n, bins, h // bins, bins, w // bins).sum(axis=(2, 4))
    return np.log1p(pooled.reshape(n, -1))


@dataclass(frozen=True)
class StyleClassifier:
    """Nearest-centroid classifier of background style on standardised spectrum features."""
    styles: tuple[str, ...]
    centroids: np.ndarray  # (S, D)
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, size: int, per_style: int = 64, seed: int = 1234,
            styles: tuple[str, ...] = procedural.STYLES) -> "StyleClassifier":
        feats, labels = [], []
        for s, style in enumerate(styles):
            imgs = np.stack([procedural.generate_image(seed, i, size=size, style=style)[0]
                             for i in range(per_style)])
            feats.append(spectrum_features(imgs))
            labels += [s] * per_style
        feats = np.concatenate(feats)
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        z = (feats - mean) / std
        labels = np.asarray(labels)
        centroids = np.stack([z[labels == s].mean(0) for s in range(len(styles))])
        return cls(tuple(styles), centroids, mean, std)

    def predict(self, frames: np.ndarray) -> list[str]:
        z = (spectrum_features(frames) - self.mean) / self.std
        d = ((z[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return [self.styles[i] for i in d.argmin(-1)]


def moves_coherently(t: Track, min_consistency: float = 0.75) -> bool:
    """The object travels (any direction) and is the same object in at least `min_consistency` of
    the frames: motion was produced, whether or not it follows the caption."""
    return direction_of(t) is not None and consistency(t) >= min_consistency


@dataclass(frozen=True)
class VideoScore:
    motion: float       # 1.0 if the object moves in the captioned direction
    moving: float       # 1.0 if the object moves coherently in any direction
    color: float        # 1.0 if the object has the captioned colour
    consistency: float  # fraction of frames with the same object
    domain: float       # fraction of frames classified as the target style


def score_video(video: np.ndarray, color: str, direction: str | None, style: str,
                classifier: StyleClassifier) -> VideoScore:
    """Score one generated video against what its caption asked for."""
    t = track(video)
    moved = direction_of(t)
    domain = float(np.mean([p == style for p in classifier.predict(np.asarray(video))]))
    return VideoScore(motion=float(direction is not None and moved == direction),
                      moving=float(moves_coherently(t)),
                      color=float(majority_color(t) == color),
                      consistency=consistency(t), domain=domain)
