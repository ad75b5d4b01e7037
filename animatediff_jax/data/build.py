"""Build a dataset from the command line (TFDS ArrayRecord, no TensorFlow needed).

    python -m animatediff_jax.data.build webvid --csv results_2M_val.csv --video_dir videos/ \
        --data_dir /data/tfds --name webvid_256 [--frames 16 --stride 4 --size 256 --workers 8]
    python -m animatediff_jax.data.build procedural --data_dir /data/tfds --name shapes \
        --num_examples 10000 [--style stripes --trigger sks --images]

Prints the dataset directory (what `train_data.dataset_dir` and `precompute --source` take) and,
for WebVid, how many clips were written, how many of them were padded or slowed from short videos,
and how many rows/videos were skipped, per reason (the builder's own lines, on stderr). An existing
dataset of that name is refused unless `--overwrite` is given (then rebuilt, replacing it once complete).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from animatediff_jax.data import config_name, procedural, require_data_extra
from animatediff_jax.errors import ArgumentParser, InputError, UsageError, plain_warnings, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.models.configs import VAEConfig
from animatediff_jax.outputs import input_path, output_path

# One example is serialized as one protobuf message (2 GiB at most) and held whole in memory: a clip's
# raw (frames, size, size, 3) uint8 video must stay under it.
MAX_CLIP_BYTES = 2**31 - 1


def check_clip_bytes(frames: int, size: int) -> None:
    """UsageError (one line, naming --frames and --size) for a clip no example can hold."""
    clip = frames * size * size * 3
    if clip > MAX_CLIP_BYTES:
        raise UsageError(f"--frames {frames} --size {size}: one clip is {clip / 2**30:.1f} GiB of pixels; an example "
                         f"must stay under 2 GiB (the protobuf limit), so lower --frames or --size")


def check_size(size: int) -> None:
    """UsageError (one line, naming --size) unless `size` is a multiple of the VAE's downsampling factor
    (SD1.x's 8), as training's train_data.sample_size must be: a model encodes whole latents only."""
    factor = VAEConfig().downsample_factor
    if size % factor:
        raise UsageError(f"--size {size}: must be a multiple of {factor}, the VAE's downsampling factor (as "
                         f"train_data.sample_size must be), e.g. {max(size // factor, 1) * factor}")


def main(argv: Sequence[str] | None = None) -> str:
    p = ArgumentParser(prog="python -m animatediff_jax.data.build", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    w = sub.add_parser("webvid", help="WebVid-style CSV (videoid, name, page_dir) + a folder of mp4 files")
    w.add_argument("--csv", required=True, type=input_path)
    w.add_argument("--video_dir", required=True, type=input_path)
    w.add_argument("--frames", type=ArgumentParser.integer(1), default=16)
    w.add_argument("--stride", type=ArgumentParser.integer(1), default=4)
    w.add_argument("--size", type=ArgumentParser.integer(1), default=256)
    w.add_argument("--min_frames", type=ArgumentParser.integer(1), default=None,
                   help="skip videos with fewer frames as too_short (default: --frames; lower keeps them as "
                        "padded clips, some frames repeated, counted in build_stats' padded_clips)")
    w.add_argument("--seed", type=ArgumentParser.integer(0), default=0)
    w.add_argument("--workers", type=ArgumentParser.integer(1), default=4, help="decoding threads")
    g = sub.add_parser("procedural", help="the procedural world of moving coloured shapes")
    g.add_argument("--num_examples", type=ArgumentParser.integer(1), default=1024)
    g.add_argument("--seed", type=ArgumentParser.integer(0), default=0)
    g.add_argument("--frames", type=ArgumentParser.integer(1), default=16)
    g.add_argument("--size", type=ArgumentParser.integer(procedural.MIN_SIZE), default=64)
    g.add_argument("--style", choices=procedural.STYLES, default="plain")
    g.add_argument("--trigger", default="")
    g.add_argument("--images", action="store_true", help="single frames, captions without motion")
    for s in (w, g):
        s.add_argument("--data_dir", required=True, type=output_path, help="TFDS data_dir to write into (a local path)")
        s.add_argument("--name", required=True, type=config_name, help="name of this variant (the TFDS config name)")
        s.add_argument("--overwrite", action="store_true", help="replace an existing dataset of this --name")
        s.add_argument("--num_shards", type=ArgumentParser.integer(1), default=None, help="ArrayRecord files (default: TFDS's choice)")
    args = p.parse_args(argv)
    check_size(args.size)
    require_data_extra("to write datasets")
    # imported after parsing (numpy, TFDS, JAX: not for --help)
    import tensorflow_datasets as tfds

    from animatediff_jax.data.dataset_output import check_dataset_output, fresh_build
    from animatediff_jax.data.procedural_tfds import ProceduralConfig, ProceduralVideos
    from animatediff_jax.data.webvid import WebVid, WebVidConfig, read_csv
    from animatediff_jax.loading import require_exists

    check_clip_bytes(1 if args.kind == "procedural" and args.images else args.frames, args.size)
    if args.kind == "procedural" and (args.num_shards or 0) > args.num_examples:
        raise UsageError(f"--num_shards {args.num_shards}: more than --num_examples {args.num_examples} "
                         "(every ArrayRecord file needs an example)")
    builder_class = WebVid if args.kind == "webvid" else ProceduralVideos
    out = check_dataset_output(args.data_dir, builder_class, args.name, args.overwrite)  # before any video is read
    if args.kind == "webvid":
        for flag, path, right_kind, kind in (("--csv", args.csv, os.path.isfile, "a file"),
                                             ("--video_dir", args.video_dir, os.path.isdir, "a folder")):
            require_exists(path, flag)
            if not right_kind(path):
                raise InputError(f"{flag} {path}: not {kind}")
        # rows with a video file; decoding may skip more
        usable = len(read_csv(args.csv, args.video_dir, f"--csv {args.csv}")[0])
        if (args.num_shards or 0) > usable:
            raise UsageError(f"--num_shards {args.num_shards}: more than the {usable} usable rows of --csv "
                             f"{args.csv} (rows with a caption and a video file; every ArrayRecord file needs a clip)")
        config = WebVidConfig(name=args.name, csv_path=args.csv, video_dir=args.video_dir, frames=args.frames,
                              stride=args.stride, size=args.size, min_frames=args.min_frames, seed=args.seed,
                              num_workers=args.workers, num_shards=args.num_shards or 1)
    else:
        config = ProceduralConfig(name=args.name, num_examples=args.num_examples, seed=args.seed,
                                  frames=args.frames, size=args.size, style=args.style, trigger=args.trigger,
                                  motion=not args.images)
    with fresh_build(args.data_dir, builder_class, args.name) as data_dir:
        builder = builder_class(config=config, data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=args.num_shards))
    if "build_stats" in builder.info.metadata:
        print("build statistics:", json.dumps(builder.info.metadata["build_stats"]))
    print(f"dataset written to {out}")
    return out


if __name__ == "__main__":
    plain_warnings()
    exit_cli(run_cli(lambda: main() and 0))  # a bad flag or input: one `error:` line
