"""Measure the paper's claim on the miniature AnimateDiff: `python -m animatediff_jax.evaluate`.

    python -m animatediff_jax.evaluate --results RESULTS.md --overwrite  # shipped weights, table -> RESULTS.md
    python -m animatediff_jax.evaluate --samples 8                           # quicker, print only
    python -m animatediff_jax.evaluate --shared-noise 0.5  # half the initial noise common to all frames

Each row samples `--samples` videos (prompt i describes clip i of a held-out seed of the procedural
world, e.g. "sks, a red circle moving left on stripes background"; sampling seed = i) and scores
them from the pixels (`miniature/scoring.py`):
- motion accuracy: the object moves in the captioned direction (chance: 25%);
- moving: the object moves coherently in any direction (travels, and is the same object in >= 75%
  of the frames): separates "the module makes motion" from "the motion follows the caption";
- colour accuracy: the object has the captioned colour;
- shape accuracy: the object has the captioned shape (circle, square, triangle; chance: 33%);
- temporal consistency: fraction of frames showing the same object (colour, size);
- domain fidelity: fraction of frames whose background the style classifier (fitted on dataset
  images) assigns to the row's domain.
Every cell is the mean over the row's videos with its 95% confidence interval (Wilson's; for the
fractions with their sum as the count, which is conservative).
Rows: base + motion module; DreamBooth + module; LoRA + module; the personalized models without a
module (16 frames denoised independently: the no-motion baseline); the base's and the personalized
models' own single images (what the text-to-image models draw before any motion module; the
personalized ones are the reference for domain fidelity); the base with modules trained under noise
schedules A and C (the paper's ablation; B is the paper's choice); base + module + the build's
MotionLoRA (its prompts and clips all move the LoRA's direction, so motion accuracy says how often
the videos move that way). Reference rows score real clips
of the prompts, and dataset images of each domain passed through the VAE (the most colour, shape
and domain fidelity any model decoding with this VAE can reach).
"""
from __future__ import annotations

import datetime
import difflib
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np

from animatediff_jax.data import procedural
from animatediff_jax.errors import ArgumentParser, InputError, UsageError, plain_warnings, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.miniature import scoring, world
from animatediff_jax.miniature.budget import STAGES
from animatediff_jax.miniature.shipped import (MINIATURE, MOTION_LORA_DIRECTION, check_build, motion_path, paths,
                                               read_record)
from animatediff_jax.nonfinite import why_nonfinite
from animatediff_jax.outputs import atomic_path, check_output, input_path
from animatediff_jax.scale_limits import GUIDANCE
EVAL_SEED = 1000  # dataset seed of the evaluation prompts (the build trains on other seeds)


@dataclass(frozen=True)
class Row:
    name: str
    domain: world.Domain
    personalization: str | None   # None | "dreambooth" | "lora"
    schedule: str | None          # motion module's training schedule; None: no module
    frames: int = world.FRAMES
    motion_lora: str | None = None  # the direction of the build's MotionLoRA, applied at scale 1; None: none

    @property
    def motion(self) -> bool:
        return self.schedule is not None


ROWS = (
    Row("base + module", world.BASE, None, "B"),
    Row("DreamBooth + module", world.DREAMBOOTH, "dreambooth", "B"),
    Row("LoRA + module", world.LORA, "lora", "B"),
    Row("base, no module", world.BASE, None, None),
    Row("DreamBooth, no module", world.DREAMBOOTH, "dreambooth", None),
    Row("LoRA, no module", world.LORA, "lora", None),
    Row("base images", world.BASE, None, None, frames=1),
    Row("DreamBooth images", world.DREAMBOOTH, "dreambooth", None, frames=1),
    Row("LoRA images", world.LORA, "lora", None, frames=1),
    Row("base + module (schedule A)", world.BASE, None, "A"),
    Row("base + module (schedule C)", world.BASE, None, "C"),
    Row(f"base + module + MotionLoRA ({MOTION_LORA_DIRECTION})", world.BASE, None, "B",
        motion_lora=MOTION_LORA_DIRECTION),
)


def prompts_for(row: Row, count: int) -> tuple[list[str], list[procedural.ClipSpec]]:
    """Captions (with the domain's trigger and style words) of held-out clips 0..count-1; with a
    MotionLoRA, each clip moves the LoRA's direction (and its caption says so)."""
    specs = [procedural.clip_spec(EVAL_SEED, i, world.FRAMES, world.SIZE, direction=row.motion_lora)
             for i in range(count)]
    captions = [procedural.caption(s, motion=row.frames > 1, style=row.domain.style, trigger=row.domain.trigger)
                for s in specs]
    return captions, specs


def checked_files(row: Row, weights: str):
    """The row's files under `weights`, through the ordinary loader's checks (`loading.check_files`:
    each file readable and what its role needs, LoRAs fitting their networks; a UserError naming the
    file otherwise)."""
    from animatediff_jax import loading
    from animatediff_jax.params import cache_root
    p = paths(weights)
    return loading.check_files(loading.ModelFiles(
        os.path.join(weights, "base"), dreambooth=p["dreambooth"] if row.personalization == "dreambooth" else None,
        loras=((p["lora"], 1.0),) if row.personalization == "lora" else (),
        motion_module=motion_path(weights, row.schedule) if row.motion else None,
        motion_loras=((p["motion_lora"], 1.0),) if row.motion_lora else ()), cache_root())


def load_pipeline(row: Row, weights: str):
    """The row's pipeline from the miniature's files, through the ordinary loader."""
    from animatediff_jax import loading
    return loading.pipeline_from_checked(checked_files(row, weights), dtype="float32")


def missing_file(weights: str, row: Row) -> str | None:
    """What of row `row`'s files is not under `weights` ("no motion_module_A.safetensors, which row ...
    needs (built by ...)", or what a model folder lacks), or None when all are there."""
    from animatediff_jax.checkpoint import incomplete_converted_folder  # JAX: not for --help
    from animatediff_jax.loading import is_converted_base
    p = paths(weights)
    need = [(os.path.dirname(p["base"]), "the base stage")]
    if row.personalization:
        need.append((p[row.personalization], f"the {row.personalization} stage"))
    if row.motion:
        need.append((motion_path(weights, row.schedule), f"the motion stage with --schedules {row.schedule}"))
    if row.motion_lora:
        need.append((p["motion_lora"], "the motion_lora stage"))
    for path, stage in need:
        built = f"built by {stage} of python -m animatediff_jax.miniature.build"
        if not os.path.exists(path):
            return f"no {os.path.relpath(path, weights)}, which row {row.name!r} needs ({built})"
        if os.path.isdir(path) and not is_converted_base(path):  # a model folder lacking one of its networks
            problem = incomplete_converted_folder(path) or "no model files"
            return f"{path}: {problem}; row {row.name!r} needs it whole ({built})"
    return None


def check_row_files(weights: str, rows) -> None:
    """Before any sampling: every file the rows need is under `weights` (InputError naming the row and
    what builds the file)."""
    for row in rows:
        problem = missing_file(weights, row)
        if problem:
            raise InputError(f"--weights {weights}: {problem}; or leave the row out with --rows")


def available_rows(weights: str) -> list[Row]:
    """The rows whose files are under `weights` (the default: all rows), one line printed for each one
    left out (e.g. the schedule-ablation modules of a build that trained schedule B only); InputError
    when none is left."""
    problems = {row: missing_file(weights, row) for row in ROWS}
    if all(problems.values()):  # every row needs the base: its problem is the first row's
        raise InputError(f"--weights {weights}: no row can be sampled: {problems[ROWS[0]]}")
    for problem in filter(None, problems.values()):
        print(f"left out: {problem}", flush=True)
    return [row for row, problem in problems.items() if not problem]


def initial_noise(pipe, seeds: list[int], frames: int, shared_noise: float) -> np.ndarray:
    """Initial noise (N, frames, h, w, C), N(0, I) per element: sqrt(shared_noise) of it one draw common to
    all frames, the rest each frame's own (PYoCo's mixed noise prior); 0 is the sampler's own noise (each
    seed's initial-noise stream), which is what the models were trained with."""
    from animatediff_jax.sampling.pipeline import initial_noise, stream_noise
    h = world.SIZE // pipe.vae_scale
    shape = (frames, h, h, pipe.unet.config.in_channels)
    own = np.asarray(initial_noise(seeds, shape))
    if shared_noise == 0:
        return own
    common = np.asarray(stream_noise(seeds, SHARED_NOISE_STREAM, shape[1:]))[:, None]
    return (math.sqrt(shared_noise) * common + math.sqrt(1 - shared_noise) * own).astype(np.float32)


SHARED_NOISE_STREAM = 1 << 20  # a stream of each seed the pipeline's draws do not use


def sample(pipe, prompts: list[str], seeds: list[int], frames: int, steps: int, guidance: float,
           batch: int = 8, shared_noise: float = 0.0) -> np.ndarray:
    """(N, frames, SIZE, SIZE, 3) float frames in [0, 1], `batch` videos per call; `shared_noise`: see
    `initial_noise`. InputError when a video comes out NaN/inf (scoring it would report made-up
    figures), saying why (`nonfinite.why_nonfinite`)."""
    out = []
    for i in range(0, len(prompts), batch):
        result = pipe(prompts[i:i + batch], seeds=seeds[i:i + batch], width=world.SIZE, height=world.SIZE,
                      frames=frames, steps=steps, guidance_scale=guidance, progress=False,
                      latents=initial_noise(pipe, seeds[i:i + batch], frames, shared_noise))
        for prompt, video in zip(prompts[i:i + batch], result.frames):
            if not np.isfinite(video).all():
                raise InputError(f"prompt {prompt!r}: the video came out NaN/inf{why_nonfinite(pipe)}")
        out.append(result.frames)
    return np.concatenate(out)


MAX_SAMPLES = 4096  # videos per row: 16 x 32 x 32 x 3 float32 each, ~0.8 GB a row at most
METRICS = ("motion", "moving", "color", "shape", "consistency", "domain")
_VIDEO_ONLY = ("motion", "moving", "consistency")  # not defined for single images


def interval(values: list[float], z: float = 1.959964) -> tuple[float, float]:
    """95% confidence interval of the mean of `values` in [0, 1]: Wilson's score interval with the
    values' sum as the count of successes. For yes/no scores this is the binomial Wilson interval; for
    fractions (consistency, domain) it is conservative, since a [0, 1] variable's variance is at most
    p(1 - p). It never shrinks to a point: 2 of 2 is not "100% (100–100)"."""
    n = len(values)
    p = float(np.sum(values)) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(scores: list[scoring.VideoScore], motion: bool) -> dict:
    """{metric: (mean, low, high) or None where the metric does not apply}."""
    out = {}
    for key in METRICS:
        values = [getattr(s, key) for s in scores]
        out[key] = None if key in _VIDEO_ONLY and not motion else (float(np.mean(values)), *interval(values))
    return out


def score_row(videos: np.ndarray, specs, row: Row, judges: scoring.Judges) -> dict:
    return summarize([scoring.score_video(v, s, row.domain.style, judges, motion=row.frames > 1)
                      for v, s in zip(videos, specs)], row.frames > 1)


def dataset_row(count: int, judges: scoring.Judges) -> dict:
    """The scores of real clips of the evaluation prompts (what a perfect model would get)."""
    specs = [procedural.clip_spec(EVAL_SEED, i, world.FRAMES, world.SIZE) for i in range(count)]
    return summarize([scoring.score_video(procedural.render(s), s, "plain", judges) for s in specs], True)


def vae_rows(weights: str, count: int, judges: scoring.Judges) -> list[dict]:
    """Colour, shape and domain scores of `count` dataset images of each domain after an encode
    (posterior mean) / decode round trip through the miniature's VAE: the most any model decoding
    with this VAE can reach."""
    from animatediff_jax.checkpoint import load_params, network_config
    from animatediff_jax.models.vae import AutoencoderKL
    from animatediff_jax.xla_options import jit
    path = paths(weights)["vae"]
    params, meta = load_params(path, dtype="float32")
    vae = AutoencoderKL(network_config(meta, path, "vae"))
    roundtrip = jit(lambda p, x: vae.apply({"params": p}, vae.apply({"params": p}, x, method=AutoencoderKL.encode)[0],
                                           method=AutoencoderKL.decode))
    rows = []
    for domain in (world.BASE, world.DREAMBOOTH, world.LORA):
        specs = [procedural.clip_spec(EVAL_SEED, i, 1, world.SIZE) for i in range(count)]
        images = np.stack([procedural.render(s, domain.style)[0] for s in specs]).astype(np.float32) / 127.5 - 1
        decoded = np.clip(np.asarray(roundtrip(params, images)) / 2 + 0.5, 0.0, 1.0)
        rows.append({"name": f"{domain.style} images through the VAE (reference)", "module": "-", "samples": count,
                     "seeds": f"images 0..{count - 1} of dataset {EVAL_SEED}", "seconds": 0.0,
                     **summarize([scoring.score_video(d[None], s, domain.style, judges, motion=False)
                                  for d, s in zip(decoded, specs)], False)})
    return rows


def progress(text: str) -> None:
    """One line on stderr saying what the evaluation does now (stdout keeps the rows and the table)."""
    print(f"[evaluate] {text} ...", file=sys.stderr, flush=True)


def evaluate(weights: str = MINIATURE, samples: int = 32, steps: int = 25, guidance: float = 7.5,
             rows=ROWS, seed_offset: int = 0, shared_noise: float = 0.0) -> list[dict]:
    """Sample and score every row; returns one dict per row (plus the dataset reference first)."""
    from animatediff_jax.sampling.pipeline import enable_compilation_cache
    enable_compilation_cache()
    progress(f"fitting the scoring classifiers; scoring {samples} dataset clips and {samples} images per domain "
             "through the VAE (reference rows)")
    judges = scoring.Judges.fit(world.SIZE)
    seeds = [seed_offset + i for i in range(samples)]
    results = [{"name": "dataset clips (reference)", "module": "-", "samples": samples,
                "seeds": f"clips 0..{samples - 1} of dataset {EVAL_SEED}", "seconds": 0.0,
                **dataset_row(samples, judges)}] + vae_rows(weights, samples, judges)
    for i, row in enumerate(rows, 1):
        progress(f"row {i}/{len(rows)} {row.name!r}: sampling {samples} "
                 + (f"videos of {row.frames} frames" if row.frames > 1 else "images"))
        start = time.time()
        pipe = load_pipeline(row, weights)
        prompts, specs = prompts_for(row, samples)
        try:
            videos = sample(pipe, prompts, seeds, row.frames, steps, guidance, shared_noise=shared_noise)
        except InputError as err:
            raise InputError(f"row {row.name!r}: {err}") from None
        results.append({"name": row.name, "module": row.schedule or "none", "samples": samples,
                        "seeds": f"{seeds[0]}..{seeds[-1]}", "seconds": round(time.time() - start, 1),
                        **score_row(videos, specs, row, judges)})
        print(format_row(results[-1]), flush=True)
    return results


def _cell(x) -> str:
    """'75% (58–87)': the mean and its 95% interval, or '–' where the metric does not apply."""
    return "–" if x is None else f"{100 * x[0]:.0f}% ({100 * x[1]:.0f}–{100 * x[2]:.0f})"


def format_row(r: dict) -> str:
    return (f"| {r['name']} | {r['module']} | {r['samples']} | {r['seeds']} | "
            + " | ".join(_cell(r[key]) for key in METRICS) + " |")


def table(results: list[dict]) -> str:
    head = ("| model | motion module (schedule) | samples | sampling seeds | motion accuracy | moving (any direction) "
            "| colour accuracy | shape accuracy | temporal consistency | domain fidelity |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    return "\n".join([head] + [format_row(r) for r in results])


def recorded_weights(weights: str, results: str) -> str:
    """`--weights` as a table written to the file `results` names it: relative to that file's folder, so
    the record holds wherever it is read from (as given when the table is only printed, `results` '-')."""
    return weights if results == "-" else os.path.relpath(weights, os.path.dirname(os.path.abspath(results)))


def weights_line(weights: str, results: str) -> str:
    """What the table says it measured: the shipped weights, or `recorded_weights` (and relative to what)."""
    if os.path.abspath(weights) == os.path.abspath(MINIATURE):
        return "the shipped animatediff_jax/assets/miniature"
    shown = recorded_weights(weights, results)
    return shown if results == "-" else f"{shown}, relative to this file's folder"


def report(results: list[dict], weights: str, steps: int, guidance: float, seconds: float,
           command: str = "python -m animatediff_jax.evaluate", results_file: str = "-", shared_noise: float = 0.0
           ) -> str:
    """The Markdown results section: settings, the command that measured it, table and the build budget
    (from build.json, `read_record`) it was measured on; `results_file`: where it is written ('-': printed)."""
    record = read_record(weights)
    budget = ", ".join(f"{s}: {record[s].get('steps', '-')} steps" if record[s].get("trained", True)
                       else f"{s}: untrained (random initialisation)"
                       for s in STAGES if s not in ("tokenizer", "motion") and s in record) or "unknown"
    motion = record.get("motion", {})
    budget += "".join(f", motion {name}: {entry.get('steps', motion.get('steps', '-'))} steps"
                      + (f" at lr {entry['learning_rate']:g}" if "learning_rate" in entry else "")
                      for name, entry in sorted(motion.get("schedules", {}).items()))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Measured {when} on {platform.machine()} CPU ({os.cpu_count()} cores), {seconds:.0f}s, with\n"
            f"`{command}`.\nDDIM {steps} steps{' (the original inference config)' if steps == 25 else ''}, CFG {guidance}, "
            f"{world.SIZE}x{world.SIZE}, {world.FRAMES} frames; prompts from dataset seed {EVAL_SEED}"
            + (f"; initial noise {shared_noise:g} shared across frames" if shared_noise else "") + ".\n"
            f"Weights: {weights_line(weights, results_file)} (build budget: {budget}).\n\n{table(results)}\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m animatediff_jax.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=MINIATURE, type=input_path, help="folder written by python -m animatediff_jax.miniature.build (default: the shipped weights)")
    parser.add_argument("--samples", type=ArgumentParser.integer(1, MAX_SAMPLES), default=32,
                        help=f"videos per row, at most {MAX_SAMPLES} (a row's videos are held in memory, ~0.2 MB "
                             "each; default 32, as in RESULTS.md)")
    parser.add_argument("--steps", type=ArgumentParser.integer(1, 1000), default=25, help="DDIM steps (default 25)")
    parser.add_argument("--guidance", type=ArgumentParser.number(*GUIDANCE), default=7.5,
                        help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--shared-noise", type=ArgumentParser.number(0, 1), default=0.0,
                        help="share of the initial noise's variance common to all frames, in [0, 1] (default 0: "
                             "each frame its own, as in training; a diagnostic of what decides the motion)")
    parser.add_argument("--rows", help="only these rows, names separated by ';' (default: every row whose files "
                        "are in --weights; those left out are named)")
    parser.add_argument("--results", default="-",  # not RESULTS.md: a quick run would replace the measured table
                        help="Markdown file to write the table to, e.g. RESULTS.md (default '-': print only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --results file (default: refuse)")
    return parser


def main(argv=None) -> int:
    return run_cli(lambda: run(build_parser().parse_args(argv)))


def command(args) -> str:
    """The command line that measures the same table (every setting that shapes it; not --results), its
    --weights as `recorded_weights` writes it."""
    words = ["python", "-m", "animatediff_jax.evaluate", "--samples", str(args.samples), "--steps", str(args.steps),
             "--guidance", str(args.guidance)]
    if os.path.abspath(args.weights) != os.path.abspath(MINIATURE):
        words += ["--weights", recorded_weights(args.weights, args.results)]
    if args.shared_noise:
        words += ["--shared-noise", f"{args.shared_noise:g}"]
    if args.rows is not None:
        words += ["--rows", args.rows]
    return shlex.join(words)


def run(args) -> int:
    check_build(args.weights)
    if args.results != "-":
        check_output(args.results, name="--results", overwrite=args.overwrite)  # before the sampling, not after
    read_record(args.weights)  # a damaged build.json is refused now, not after the sampling
    if args.rows is None:
        rows = available_rows(args.weights)
    else:
        names = [n.strip() for n in args.rows.split(";") if n.strip()]  # a trailing ';' names no row
        if not any(names):
            raise UsageError(f"--rows {args.rows!r}: no row names; give names separated by ';' (rows are "
                             f"{[r.name for r in ROWS]}), or leave --rows out for all")
        known = [r.name for r in ROWS]
        unknown = [n for n in names if n not in known]
        if unknown:
            lower = {k.lower(): k for k in known}  # case and spacing are the likeliest slips
            close = [lower[m] for n in unknown
                     for m in difflib.get_close_matches(" ".join(n.lower().split()), lower, n=1, cutoff=0.6)]
            raise UsageError(f"--rows: unknown row(s) {unknown}" + (f"; did you mean {close}?" if close else "")
                             + f"; rows are {known}")
        rows = [r for r in ROWS if r.name in names]
        check_row_files(args.weights, rows)
    for row in rows:  # damaged or wrong files: one line before any work
        checked_files(row, args.weights)
    start = time.time()
    results = evaluate(args.weights, args.samples, args.steps, args.guidance, rows, shared_noise=args.shared_noise)
    text = report(results, args.weights, args.steps, args.guidance, time.time() - start, command(args), args.results,
                  args.shared_noise)
    print(text)
    if args.results != "-":
        with atomic_path(args.results) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write("# Miniature AnimateDiff: measured results\n\n" + text)
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    plain_warnings()
    exit_cli(main())
