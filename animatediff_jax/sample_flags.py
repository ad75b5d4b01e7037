"""The flags of `python -m animatediff_jax.sample`: their values checked as they are parsed (type,
range, finiteness; an error is one `UsageError` line naming the flag), and `sample_options`, the
same flags as a mapping in a prompt-config entry (what a run writes to its config.yaml so that
re-running it reproduces the videos; read back through the same parser).
"""
from __future__ import annotations

import argparse
import os

from animatediff_jax.errors import ArgumentParser, UsageError
from animatediff_jax.hub_ids import variant_name
from animatediff_jax.outputs import input_path, output_path
from animatediff_jax.path_scale import split_path_scale
from animatediff_jax.sampling.prompt_config import MAX_SIDE, seed_problem
from animatediff_jax.scale_limits import CONDITIONING, GUIDANCE, LORA, MOTION

PROG = "python -m animatediff_jax.sample"
EXAMPLES = f"""examples:
  {PROG}                       # the miniature (shipped weights)
  {PROG} configs/prompts/v2-realistic-vision.yaml --base models/sd15
  {PROG} --base models/sd15 --motion-module mm_sd_v15_v2.ckpt --prompt "a cat" --seed 42
  {PROG} samples/sample-<time>/config.yaml   # the same videos again"""
SCHEDULERS = ("ddim", "euler", "euler_ancestral", "dpmpp_2m", "lcm")
MOTION_VERSIONS = ("v1", "v2", "v3")
# = models/attention.IMPLEMENTATIONS (that module imports JAX; tests/test_cli_help.py keeps them equal)
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "chunked", "cudnn", "tpu_flash")
# Flags a prompt config's entry may also carry under `sample_options` (written there by every run).
SAMPLE_OPTIONS = ("base", "tokenizer", "variant", "motion_version", "motion_heads", "motion_norm_groups", "scheduler", "scheduler_config", "eta",
                  "context_length", "context_stride", "context_weighting", "context_scope", "no_noise_shuffle",
                  "freeinit_iters",
                  "freeinit_filter", "init_video", "strength", "latents", "dtype", "attention", "decode_chunk",
                  "batch_size", "fps", "diffusers_norm")
_SWITCHES = {"no_noise_shuffle", "diffusers_norm"}  # store_true flags
# The context-window settings: meaningful only with context_length (flags --context-*, --no-noise-shuffle).
CONTEXT_SETTINGS = {"context_stride": "--context-stride", "context_weighting": "--context-weighting",
                    "context_scope": "--context-scope", "no_noise_shuffle": "--no-noise-shuffle"}
_PATHS = {"base", "tokenizer", "init_video", "latents"}
# The flags naming model inputs: given any, the run needs --prompt or --travel (the miniature's own
# prompts go with none).
MODEL_INPUT_FLAGS = {"base": "--base", "dreambooth": "--dreambooth", "motion_module": "--motion-module",
                     "lora": "--lora", "motion_lora": "--motion-lora", "domain_adapter": "--domain-adapter",
                     "controlnet": "--controlnet", "sparsectrl": "--sparsectrl"}
# Flags that name what an entry of a prompt config names itself: refused next to a config.
ENTRY_FLAGS = {"prompt": "--prompt", "travel": "--travel", "seed": "--seed", "negative_prompt": "--negative-prompt",
                "dreambooth": "--dreambooth", "lora": "--lora", "motion_module": "--motion-module",
                "motion_lora": "--motion-lora", "domain_adapter": "--domain-adapter", "controlnet": "--controlnet",
                "control_video": "--control-video", "control_guidance_start": "--control-guidance-start",
                "control_guidance_end": "--control-guidance-end", "sparsectrl": "--sparsectrl",
                "keyframes": "--keyframes", "keyframe_images": "--keyframe-images"}


# ----------------------------------------------------------------------------- flag values

def _int_at_least(low: int, high: int = ArgumentParser.INT_MAX):
    return ArgumentParser.integer(low, high)


DEFAULT_STRENGTH = 0.8  # --strength of a video-to-video run that gives none (diffusers' default)


def _seed(text: str) -> int:
    """-1 (random) or a seed in [0, SEED_MAX], as a prompt config's `seed`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if (problem := seed_problem(value)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


MAX_FPS = 50  # a GIF's frame delays are whole 1/100 s; players show delays under 2/100 s at 1/10 s


def _fps(text: str) -> float:
    """Frames per second in [0.01, MAX_FPS] (at the slowest, a frame per 100 s)."""
    value = ArgumentParser.number()(text)
    if value > MAX_FPS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_FPS}, got {value:g} (a GIF stores frame delays in whole 1/100 s, and players "
            f"show delays under 2/100 s, i.e. over {MAX_FPS} fps, at 1/10 s)")
    if value < 0.01:
        raise argparse.ArgumentTypeError(f"must be in [0.01, {MAX_FPS}], got {value:g}")
    return value


def _path_scale(limits: tuple[float, float]):
    """argparse `type=`: `PATH` or `PATH:SCALE` (SCALE a number within `limits`: `scale_limits`, default
    1.0) -> (path, scale); an empty PATH is refused."""
    def parse(arg: str) -> tuple[str, float]:
        path, text = split_path_scale(arg)
        try:
            scale = 1.0 if text is None else ArgumentParser.number(*limits)(text)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{arg!r}: scale {e}") from None
        if not path:
            raise argparse.ArgumentTypeError(f"{arg!r}: empty path" if arg else "empty path")
        return path, scale
    return parse


def _block_scales(arg: str) -> dict[str, float]:
    """`BLOCK=FACTOR,...` (e.g. `down_blocks_0=0.5,mid_block=1.2`): {block: finite factor}. Whether
    the blocks exist is checked against the models' configs before any model loads."""
    out: dict[str, float] = {}
    for item in arg.split(","):
        block, sep, factor = item.strip().partition("=")
        if not sep or not block:
            raise argparse.ArgumentTypeError(f"{item!r}: expected BLOCK=FACTOR, e.g. mid_block=1.2")
        if block in out:
            raise argparse.ArgumentTypeError(f"{block} is given twice")
        try:
            out[block] = ArgumentParser.number(*MOTION)(factor)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{item!r}: factor {e}") from None
    return out


def _int_list(arg: str) -> list[int]:
    """`0,8,15` -> [0, 8, 15] (negative counts from the end: -1 is the last frame)."""
    try:
        return [int(v) for v in arg.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{arg!r}: expected comma-separated frame numbers, e.g. 0,8,15") from None


def _path_list(arg: str) -> list[str]:
    """`a.png,b.png` -> ["a.png", "b.png"]."""
    paths = arg.split(",")
    if not all(paths):
        raise argparse.ArgumentTypeError(f"{arg!r}: expected comma-separated paths, e.g. a.png,b.png")
    return paths


def _folder(arg: str) -> str:
    if not arg.strip():
        raise argparse.ArgumentTypeError("empty path: give a folder (default: samples)")
    return output_path(arg)  # a URL refused


def _travel(arg: str) -> tuple[int, str]:
    """`FRAME:PROMPT`, FRAME an integer ≥ 0 (that it lies in the video is checked once its length is known)."""
    frame, sep, prompt = arg.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{arg!r}: expected FRAME:PROMPT, e.g. 8:a dog running")
    try:
        number = int(frame)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{arg!r}: frame {frame.strip()!r} is not an integer "
                                         "(expected FRAME:PROMPT, e.g. 8:a dog running)") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{arg!r}: frame must be an integer ≥ 0 (0 is the first frame), "
                                         f"got {number}")
    return number, prompt.strip()


_Parser = ArgumentParser  # errors are one UsageError `--flag: problem` (printed by run_cli, exit 2)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each default shown once: argparse's own where a flag has one and its help does not say it."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        if action.option_strings and "default" not in text and not (
                default is None or default is False or default == [] or default is argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    pos, nonneg = _int_at_least(1), _int_at_least(0)
    lora_scale, conditioning_scale = _path_scale(LORA), _path_scale(CONDITIONING)
    p = _Parser(prog=PROG, formatter_class=_HelpFormatter,
                description="Text-to-video with AnimateDiff: a prompt config, or the same settings as flags.\n"
                            "Every value is checked before any model loads.", epilog=EXAMPLES)
    p.add_argument("config", type=input_path, nargs="?",
                   help="prompt config (original AnimateDiff YAML schema, or a run's config.yaml)")
    p.add_argument("--config", type=input_path, dest="config_opt", metavar="YAML", help="same as the positional config")
    m = p.add_argument_group("models (PyTorch files are converted on the fly and cached; Flax files load directly; "
                             "a hub id owner/name is found in, or downloaded into, the Hugging Face cache; with a "
                             "prompt config --dreambooth, --lora, --motion-module, --motion-lora and --domain-adapter "
                             "are refused: its entries name their own)")
    m.add_argument("--base", type=input_path, help="SD1.x base: diffusers folder or its hub id, single file or converted folder "
                                  "(default: the miniature AnimateDiff shipped in animatediff_jax/assets/miniature)")
    m.add_argument("--dreambooth", type=input_path, help="personalized SD1.x model whose weights replace the --base's (same family): "
                                        "single file, diffusers folder (or hub id) or converted folder, as --base")
    m.add_argument("--lora", action="append", default=[], type=lora_scale, metavar="PATH[:SCALE]",
                   help="LoRA (kohya/diffusers file, PEFT adapter folder, or a hub id of a LoRA repo), repeatable, "
                        f"fused as scale * alpha/rank * up @ down; scale {LORA[0]:g}..{LORA[1]:g}, default 1.0")
    m.add_argument("--motion-module", type=input_path, help="AnimateDiff motion module (v1/v2/v3 file, MotionAdapter folder or its hub id, "
                   "e.g. guoyww/animatediff-motion-adapter-v1-5-2); without --base the shipped miniature's; "
                   "'none': no module (each frame an independent image)")
    m.add_argument("--motion-version", choices=MOTION_VERSIONS,
                   help="the motion module's version, for files that do not show it (no position-encoding buffer, "
                        "e.g. saved by the original trainer): v1 = 24 frames, joint resnet GroupNorm; v2 = 32, mid "
                        "block; v3 = 32, no mid block (default: read from the file, or the entry's inference_config)")
    m.add_argument("--motion-heads", type=ArgumentParser.integer(1), metavar="N",
                   help="the motion module's attention heads, for an original-format file that does not store them "
                        "(.ckpt/.pt/.bin; every released module: 8, the default); a MotionAdapter folder's config.json "
                        "or a converted file states its own")
    m.add_argument("--motion-norm-groups", type=ArgumentParser.integer(1), metavar="N",
                   help="the motion module's GroupNorm groups, for an original-format file that does not store them "
                        "(default 32, as every released module)")
    m.add_argument("--motion-lora", action="append", default=[], metavar="PATH[:SCALE]", type=lora_scale,
                   help="MotionLoRA (file, or a hub id such as guoyww/animatediff-motion-lora-zoom-in), repeatable")
    m.add_argument("--domain-adapter", metavar="PATH[:SCALE]", type=lora_scale,
                   help="v3 domain adapter LoRA (file or hub id, as --lora)")
    m.add_argument("--variant", type=variant_name,
                   help="the weight variant, e.g. fp16, of every diffusers folder given (--base, --dreambooth, "
                        "--motion-module, --controlnet, --sparsectrl; their hub ids) that has it (default: a "
                        "folder's plain weights, else the one variant it holds)")
    m.add_argument("--tokenizer", type=input_path, help="CLIP tokenizer folder (needed when --base is a single file), or its hub "
                                       "id: a tokenizer repo, or an SD repo (its tokenizer/)")
    m.add_argument("--motion-scale", type=ArgumentParser.number(*MOTION), metavar="S",
                   help="multiplier on every motion module's residual (ComfyUI's motion scale): 1 = the paper's "
                        f"model, 0 = no motion module, at most {MOTION[1]:g} (default: the entry's motion_scale, else 1)")
    m.add_argument("--motion-block-scales", type=_block_scales, metavar="BLOCK=F,...",
                   help="further motion-scale factors per UNet block, e.g. down_blocks_0=0.5,mid_block=1.2 "
                        "(blocks: down_blocks_<i>, mid_block, up_blocks_<i>; default: the entry's "
                        "motion_block_scales, else 1)")
    m.add_argument("--diffusers-norm", action="store_true",
                   help="normalise the motion module's input over all frames jointly as diffusers does "
                        "(default: per frame, as the original and its released checkpoints)")
    c = p.add_argument_group("control (users bring their control images: depth, pose, edges, ... at the output size; "
                             "not with a prompt config: its entries name their own)")
    c.add_argument("--controlnet", action="append", default=[], type=conditioning_scale, metavar="PATH[:SCALE]",
                   help="SD1.x ControlNet (diffusers folder or its hub id, control_v11*_sd15_*.pth/.safetensors), "
                        f"repeatable (residuals summed); SCALE = conditioning scale, {CONDITIONING[0]:g}..{CONDITIONING[1]:g}, default 1.0")
    c.add_argument("--control-video", type=input_path, action="append", default=[], metavar="VIDEO",
                   help="the conditioning video of each --controlnet, in order: a video file or a folder of frames, "
                        "one frame per output frame (or a single image for all), at the output size")
    c.add_argument("--control-guidance-start", action="append", default=[], type=ArgumentParser.number(0, 1), metavar="F",
                   help="fraction of the steps before which a ControlNet is off: one for all or one per --controlnet "
                        "(default 0)")
    c.add_argument("--control-guidance-end", action="append", default=[], type=ArgumentParser.number(0, 1), metavar="F",
                   help="fraction of the steps after which a ControlNet is off (default 1)")
    c.add_argument("--sparsectrl", type=conditioning_scale, metavar="PATH[:SCALE]",
                   help="SparseCtrl encoder (v3_sd15_sparsectrl_rgb.ckpt / _scribble.ckpt, or a diffusers "
                        "SparseControlNetModel folder or its hub id) conditioning --keyframes with --keyframe-images")
    c.add_argument("--keyframes", type=_int_list, metavar="I,J,...",
                   help="the frames the key images condition, e.g. 0,8,15 (-1 = the last frame)")
    c.add_argument("--keyframe-images", type=_path_list, metavar="A.png,B.png,...",
                   help="one image per --keyframes entry (centre-cropped to the output aspect and resized, as the "
                        "original SparseCtrl reads them)")
    g = p.add_argument_group("generation (with a prompt config, a given flag overrides its value; --prompt, "
                             "--negative-prompt, --travel and --seed are the config's own and refused)")
    g.add_argument("--prompt", action="append", help="prompt, repeatable (one video each); needed with any "
                   "model flag (without one, the miniature's own prompts by default)")
    g.add_argument("--negative-prompt", action="append", help="one (broadcast) or one per prompt")
    g.add_argument("--travel", action="append", type=_travel, metavar="FRAME:PROMPT",
                   help="prompt travel: a prompt from FRAME on, embeddings interpolated between key frames")
    g.add_argument("--seed", action="append", type=_seed, help="one per prompt or one for all; -1 = random (default)")
    g.add_argument("--steps", type=pos, help="denoising steps (default 25)")
    g.add_argument("--guidance-scale", type=ArgumentParser.number(*GUIDANCE), help=f"classifier-free guidance scale, {GUIDANCE[0]:g}..{GUIDANCE[1]:g} (default 7.5; "
                                                            "≤ 1 samples without it, as diffusers)")
    g.add_argument("--width", "--W", type=_int_at_least(1, MAX_SIDE),
                   help="pixels (default: the base model's own size, UNet sample_size x VAE factor: 512 for SD1.5, "
                        "32 for the miniature)")
    g.add_argument("--height", "--H", type=_int_at_least(1, MAX_SIDE), help="pixels (default: the base model's own size, as for --width; not --width's "
                                                                       "value)")
    g.add_argument("--frames", "--L", type=pos, help="video length (default 16)")
    g.add_argument("--clip-skip", type=nonneg, metavar="N",
                   help="use the text encoder's N-th last layer (diffusers' rule; A1111's 'clip skip 2' is 1) "
                        "(default 0: the last)")
    g.add_argument("--scheduler", choices=SCHEDULERS, help="sampler (default: DDIM)")
    g.add_argument("--scheduler-config", type=input_path, default="original",
                   help="'original' (AnimateDiff: linear 0.00085-0.012, DDIM leading, offset 1), 'base' "
                        "(the base folder's scheduler config) or a scheduler_config.json path")
    g.add_argument("--eta", type=ArgumentParser.number(0, 1), default=0.0,
                   help="DDIM eta in [0, 1]: 0 deterministic (default), 1 DDPM's noise")
    g.add_argument("--context-length", type=pos, help="sliding context window length (long videos)")
    # The window settings below take effect with --context-length only; unset (None) = ContextOptions' defaults.
    g.add_argument("--context-stride", type=pos, help="frames between context windows (default 4)")
    g.add_argument("--context-weighting", choices=("pyramid", "uniform"),
                   help="how the predictions of overlapping windows are averaged (default pyramid)")
    g.add_argument("--context-scope", choices=("unet", "motion"),
                   help="what runs per window: 'unet' (default) the whole UNet (memory of one window; each "
                        "frame computed in ~length/stride windows) or 'motion' only the motion modules' "
                        "attentions (FreeNoise as diffusers runs it: a frame costs about what the plain loop's "
                        "does; memory grows with the frames)")
    g.add_argument("--no-noise-shuffle", action="store_true", help="no FreeNoise noise rescheduling")
    g.add_argument("--freeinit-iters", type=pos, default=1, help="FreeInit passes (1 = off)")
    g.add_argument("--freeinit-filter", choices=("butterworth", "gaussian", "ideal"), default="butterworth",
                   help="FreeInit's low-pass filter")
    g.add_argument("--init-video", type=input_path,
                   help="video-to-video: input GIF / MP4 / frame folder, resampled to the output's frames and "
                        "size (evenly in time; bicubic, stretched if its aspect differs)")
    g.add_argument("--strength", type=ArgumentParser.number(above=0, high=1),
                   help=f"video-to-video strength, only with --init-video (default: {DEFAULT_STRENGTH})")
    g.add_argument("--latents", type=input_path, help="initial noise .npy in diffusers layout (batch, channels, frames, h, w)")
    r = p.add_argument_group("runtime and outputs")
    r.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: bfloat16 on GPU/TPU, float32 on CPU")
    r.add_argument("--attention", choices=ATTENTION_IMPLEMENTATIONS, default="auto",
                   help="attention implementation (default: auto, the fastest measured for the backend and length)")
    r.add_argument("--decode-chunk", type=pos, metavar="N",
                   help="frames the VAE decodes at once (default: the pipeline's, sized for an 8 GB card at 512x512; "
                        "larger is faster and needs more memory)")
    r.add_argument("--allow-over-memory", action="store_true",
                   help="sample even where the run's estimated peak memory exceeds the memory available (the "
                        "estimate, from the models' configs and the sizes, is checked before any model loads)")
    r.add_argument("--out", default="samples", type=_folder, help="parent folder of the run folder")
    r.add_argument("--batch-size", type=pos, default=1,
                   help="videos per call (a seed gives the same video at any batch size; larger batches use "
                        "more memory)")
    r.add_argument("--fps", type=_fps, default=8.0,
                   help=f"frames per second of the GIF/MP4, at most {MAX_FPS} (GIF frame delays are whole 1/100 s)")
    r.add_argument("--png", action="store_true", help="also write PNG frames per sample")
    r.add_argument("--save-npy", action="store_true", help="also write raw frames (F, H, W, 3) float32 .npy")
    r.add_argument("--no-progress", action="store_true", help="no per-step progress bar")
    return p


def option_tokens(options, where: str) -> list[str]:
    """An entry's `sample_options` mapping as command-line tokens (parsed by the same parser)."""
    if not isinstance(options, dict):
        raise UsageError(f"{where}: must be a mapping of option: value, got {type(options).__name__}")
    tokens = []
    for key, value in options.items():
        if key == "strength" and not options.get("init_video"):
            continue  # runs before 2026-12 recorded the default strength of every run; it never applied
        if key not in SAMPLE_OPTIONS:
            raise UsageError(f"{where}: unknown option {key!r}; known: {', '.join(SAMPLE_OPTIONS)}")
        flag = "--" + key.replace("_", "-")
        if key in _SWITCHES:
            if not isinstance(value, bool):
                raise UsageError(f"{where}: {key} must be true or false, got {value!r}")
            tokens += [flag] if value else []
        elif value is not None:
            if isinstance(value, bool):
                raise UsageError(f"{where}: {key} takes a number, name or path, not {str(value).lower()}")
            if isinstance(value, (list, dict)):
                raise UsageError(f"{where}: {key} must be a single value, got {value!r}")
            tokens.append(f"{flag}={value}")
    return tokens


def options_of(opts: argparse.Namespace, **resolved) -> dict:
    """The `sample_options` of a job for config.yaml: each option's value (`resolved` ones win: the
    model files actually used, the dtype actually computed in), paths made absolute (a hub id kept:
    `convert.sources.recorded`), unset ones left out, and the context-window settings left out
    without context windows (they did not apply)."""
    from convert.sources import recorded  # noqa: PLC0415 - convert/ imports numpy, huggingface_hub (not --help)
    out = {}
    for key in SAMPLE_OPTIONS:
        if key in CONTEXT_SETTINGS and opts.context_length is None:
            continue
        value = resolved[key] if key in resolved else getattr(opts, key)
        if value is None or value is False or value == []:
            continue
        if key in _PATHS:
            value = recorded(value)
        elif key == "scheduler_config" and value not in ("original", "base"):
            value = os.path.abspath(value)
        out[key] = value
    return out
