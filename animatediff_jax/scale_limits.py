"""The ranges the sampler accepts for its scales: one home for the command line's flags, the prompt configs'
keys and the Python API.

Each scale multiplies a residual (LoRA, ControlNet, motion module) or the guided difference of noise
predictions. Far beyond what anyone uses it only saturates the video to flat colour, and around 1e30 float32
overflows into NaN frames, so a value outside its range is refused, naming the range. The bounds are those of
ComfyUI's nodes where it has one, the tool most of these files and values come from. No imports: argparse types
of the CLIs' --help use it.
"""
from __future__ import annotations

# classifier-free guidance: ComfyUI's KSampler `cfg` range (SD's usual 5–15; ≤ 1 samples without guidance)
GUIDANCE = (0.0, 100.0)
# ControlNet / SparseCtrl conditioning scale: ComfyUI's Apply ControlNet `strength` range (usual 0.5–1.5)
CONDITIONING = (0.0, 10.0)
# LoRA, MotionLoRA and domain-adapter strength: ComfyUI's LoraLoader `strength_model` range (negative inverts)
LORA = (-100.0, 100.0)
# motion scale and per-block factors (0: no motion module): bounded as LoRA strengths are, from above
MOTION = (0.0, 100.0)


def scale_problem(value: float, limits: tuple[float, float]) -> str | None:
    """`must be in [low, high], got value` when `value` lies outside `limits` (NaN included), else None."""
    low, high = limits
    if low <= value <= high:
        return None
    return f"must be in [{low:g}, {high:g}], got {value:g}"
