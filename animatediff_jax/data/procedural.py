"""A deterministic procedural video-caption world: coloured shapes moving in captioned directions.

No downloads, pure NumPy. Every clip is a function of `(seed, index)` only, so any host can
regenerate any example and a dataset is reproducible bit for bit.

    video, caption = generate_clip(seed=0, index=3)        # (16, 64, 64, 3) uint8, "a red circle moving left"
    image, caption = generate_image(seed=0, index=3)       # (64, 64, 3) uint8, "a red circle"
    generate_clip(0, 3, style="stripes", trigger="sks")    # a personalization "domain": "sks, a red circle ..."

One object (circle, square or triangle) of one colour moves at constant speed in one of four
directions over a static background. The start position and speed are chosen so the whole object
stays inside the frame for every frame (no wrap, no bounce), so the caption is true of every frame.
`style` selects the background ("plain", "stripes", "dots", "checker"): the visual domains used for
personalization experiments. `clip_spec` exposes the sampled attributes for evaluation code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Saturated object colours (RGB). Order is part of the dataset definition: do not reorder.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
STYLES: tuple[str, ...] = ("plain", "stripes", "dots", "checker")
# Muted background colours, far from every object colour.
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((28, 28, 34), (70, 72, 80), (40, 52, 48), (60, 44, 52))
# Words every caption is built from (besides colours, shapes, directions, styles and a trigger).
CAPTION_WORDS: tuple[str, ...] = ("a", "an", "moving", "on", "background")
MIN_SIZE = 16  # smallest frame side the object (about 1/8 of it) and its motion fit in

# Unit direction vectors (dx, dy) in image coordinates (y grows downwards).
_DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def vocabulary(extra: tuple[str, ...] = ()) -> list[str]:
    """All words a caption can contain, in a fixed order (for building a tiny tokenizer)."""
    words = list(CAPTION_WORDS) + list(COLORS) + list(SHAPES) + list(DIRECTIONS) + list(STYLES) + list(extra)
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class ClipSpec:
    """The attributes of one example; everything the renderer and the caption depend on."""
    color: str
    shape: str
    direction: str
    background: tuple[int, int, int]
    radius: float        # half the object's extent, in pixels
    start: tuple[float, float]  # object centre (x, y) at frame 0
    speed: float         # pixels per frame
    frames: int
    size: int

    def centres(self) -> np.ndarray:
        """(frames, 2) object centre (x, y) per frame."""
        dx, dy = _DIRECTION_VECTORS[self.direction]
        t = np.arange(self.frames, dtype=np.float64) * self.speed
        return np.stack([self.start[0] + dx * t, self.start[1] + dy * t], axis=-1)


def clip_spec(seed: int, index: int, frames: int = 16, size: int = 64,
              min_speed: float = 1.0, max_speed: float = 3.0, direction: str | None = None) -> ClipSpec:
    """Sample the attributes of example `index` of the dataset with `seed` (deterministic); `direction`
    (one of DIRECTIONS), when given, replaces the drawn one (the other draws stay as they are).

    The object radius scales with `size` (about 1/8 of it). Speed is drawn from
    [min_speed, max_speed] * size/64 and capped so the object stays fully visible over all frames.
    """
    if frames < 1 or size < MIN_SIZE:
        raise ValueError(f"procedural clip needs frames >= 1 and size >= {MIN_SIZE}, got frames={frames}, size={size}")
    rng = np.random.default_rng([int(seed), int(index)])
    color = list(COLORS)[rng.integers(len(COLORS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    drawn = DIRECTIONS[rng.integers(len(DIRECTIONS))]
    if direction not in (None, *DIRECTIONS):
        raise ValueError(f"unknown procedural direction {direction!r}; expected one of {DIRECTIONS}")
    direction = direction or drawn
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    radius = size * rng.uniform(0.10, 0.15)
    margin = radius + 1.0
    travel_room = size - 2.0 * margin  # range of centre positions that keep the object inside
    scale = size / 64.0
    speed = rng.uniform(min_speed, max_speed) * scale
    if frames > 1:
        speed = min(speed, travel_room / (frames - 1))
    travel = speed * (frames - 1)
    dx, dy = _DIRECTION_VECTORS[direction]
    # Along the motion axis, start so that the whole path fits; across it, anywhere inside.
    along = margin + rng.uniform(0.0, max(travel_room - travel, 0.0))  # capped speed: rounding can give -1e-13
    across = margin + rng.uniform(0.0, travel_room)
    if dx != 0:
        x = along if dx > 0 else size - along
        start = (x, across)
    else:
        y = along if dy > 0 else size - along
        start = (across, y)
    return ClipSpec(color, shape, direction, background, float(radius), (float(start[0]), float(start[1])),
                    float(speed), frames, size)


def caption(spec: ClipSpec, motion: bool = True, style: str = "plain", trigger: str | None = None) -> str:
    """"a red circle moving left" (+ " on stripes background" for a non-plain style; trigger first)."""
    words = ["an" if spec.color[0] in "aeiou" else "a", spec.color, spec.shape]
    if motion:
        words += ["moving", spec.direction]
    if style != "plain":
        words += ["on", style, "background"]
    text = " ".join(words)
    return f"{trigger}, {text}" if trigger else text


def _background(size: int, color: tuple[int, int, int], style: str) -> np.ndarray:
    """(size, size, 3) float32 static background in the given style."""
    if style not in STYLES:
        raise ValueError(f"unknown procedural style {style!r}; expected one of {STYLES}")
    base = np.asarray(color, np.float32)
    light = np.clip(base + 60.0, 0, 255)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = max(size / 8.0, 4.0)
    if style == "stripes":
        mask = ((xx + yy) // (period / 2.0)) % 2 == 1  # diagonal bands
    elif style == "dots":
        cx = (xx % period) - period / 2.0
        cy = (yy % period) - period / 2.0
        mask = cx * cx + cy * cy <= (period * 0.2) ** 2
    elif style == "checker":
        mask = ((xx // period) + (yy // period)) % 2 == 1
    else:
        mask = np.zeros((size, size), bool)
    img[mask] = light
    return img


def _coverage(shape: str, centre: np.ndarray, radius: float, size: int, supersample: int = 4) -> np.ndarray:
    """(size, size) float32 fraction of each pixel covered by the shape (anti-aliased)."""
    s = supersample
    coords = (np.arange(size * s, dtype=np.float32) + 0.5) / s  # pixel-space sample positions
    x = coords[None, :] - np.float32(centre[0])
    y = coords[:, None] - np.float32(centre[1])
    if shape == "circle":
        inside = x * x + y * y <= radius * radius
    elif shape == "square":
        half = radius * 0.9
        inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    elif shape == "triangle":
        # Upward-pointing isosceles triangle inscribed in the radius box.
        top, bottom = -radius, radius * 0.8
        half_width = radius * (y - top) / (bottom - top)
        inside = (y >= top) & (y <= bottom) & (np.abs(x) <= half_width)
    else:
        raise ValueError(f"unknown procedural shape {shape!r}; expected one of {SHAPES}")
    return inside.reshape(size, s, size, s).mean(axis=(1, 3), dtype=np.float32)


def render(spec: ClipSpec, style: str = "plain") -> np.ndarray:
    """(frames, size, size, 3) uint8 video of `spec` over a `style` background."""
    bg = _background(spec.size, spec.background, style)
    color = np.asarray(COLORS[spec.color], np.float32)
    out = np.empty((spec.frames, spec.size, spec.size, 3), np.uint8)
    for f, centre in enumerate(spec.centres()):
        alpha = _coverage(spec.shape, centre, spec.radius, spec.size)[..., None]
        out[f] = np.rint(bg * (1.0 - alpha) + color * alpha).astype(np.uint8)
    return out


def generate_clip(seed: int, index: int, frames: int = 16, size: int = 64, style: str = "plain",
                  trigger: str | None = None, min_speed: float = 1.0,
                  max_speed: float = 3.0) -> tuple[np.ndarray, str]:
    """Example `index` of the video dataset `seed`: ((frames, size, size, 3) uint8, caption).

    Caption: "a red circle moving left"; with `style != "plain"` it ends in "on <style> background",
    and a `trigger` word (e.g. "sks") is prefixed as "sks, a red circle ...".
    """
    spec = clip_spec(seed, index, frames, size, min_speed, max_speed)
    return render(spec, style), caption(spec, motion=True, style=style, trigger=trigger)


def generate_image(seed: int, index: int, size: int = 64, style: str = "plain",
                   trigger: str | None = None) -> tuple[np.ndarray, str]:
    """Example `index` of the image dataset `seed`: ((size, size, 3) uint8, caption without motion).

    The object is placed anywhere inside the frame; caption e.g. "a red circle".
    """
    spec = clip_spec(seed, index, frames=1, size=size)
    return render(spec, style)[0], caption(spec, motion=False, style=style, trigger=trigger)
