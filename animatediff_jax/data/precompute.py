"""Pre-compute VAE latents and CLIP text embeddings once, so large runs do not re-encode every epoch.

    python -m animatediff_jax.data.precompute --source /tfds/webvid/webvid_256/1.0.0 \
        --pretrained_model_path runwayml-sd15/ --data_dir /tfds --name webvid_256_sd15 --num_shards 64

reads a built video dataset (WebVid or procedural), encodes every clip with the frozen VAE and every
caption with the frozen text encoder, and writes a TFDS ArrayRecord dataset
`<data_dir>/precomputed_latents/<name>/1.0.0` with one example per clip, in the source's order:

    latent_mean, latent_logvar  (F, h, w, c) float32  the VAE posterior N(mean, exp(logvar)), UNscaled
    text_embedding              (L, D) float32        last hidden state of the text encoder
    input_ids                   (L,) int32            the caption's tokens (for on-the-fly caption dropout)
    caption, source_index                             the original caption and index in the source

Training draws its own latent sample with `sample_latents(rng, mean, logvar, scaling_factor)` (the
same draw as encoding the video with that key), so the noise seed stays the trainer's. The dataset's `metadata.json` records `scaling_factor`, the
model (a local base as its absolute path) and the source; `null_text_embedding.npy` (the embedding of
"", for classifier-free-guidance caption dropout) sits next to it. Training refuses, before its models
load, latents that do not fit its frames, size or base's VAE (latent channels, scaling factor), and warns
of latents recorded from another model (`precomputed_latents.check_fits`). An existing dataset of that name is refused unless `--overwrite` is
given; then it is rebuilt and replaces the old one only once complete. `--num_shards` sets the number
of ArrayRecord files (at most one per example of `--source`: more is refused before anything is
encoded); hosts split the examples by index (see `pipeline.InputPipeline`), so any number of hosts can
read them.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from animatediff_jax.data import config_name, require_data_extra
from animatediff_jax.errors import ArgumentParser, InputError, UsageError, plain_warnings, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.outputs import input_path, output_path


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m animatediff_jax.data.precompute", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, type=input_path, help="built video dataset directory (…/name/config/version)")
    p.add_argument("--pretrained_model_path", required=True, type=input_path,
                   help="SD1.x base: diffusers folder, single .safetensors/.ckpt file or converted folder "
                        "(python -m convert base; e.g. animatediff_jax/assets/miniature/base)")
    p.add_argument("--variant", help="diffusers folder: the weight variant, e.g. fp16, where present (default: the "
                                     "plain weights, else the one variant the folder holds)")
    p.add_argument("--tokenizer_path", default=None, type=input_path, help="default: the base model's tokenizer")
    p.add_argument("--data_dir", required=True, type=output_path, help="TFDS data_dir to write into")
    p.add_argument("--name", required=True, type=config_name,
                   help="name of the pre-computed variant (its TFDS config name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of this --name")
    p.add_argument("--batch_size", type=ArgumentParser.integer(1), default=8)
    p.add_argument("--num_shards", type=ArgumentParser.integer(1), default=None,
                   help="ArrayRecord files (default: TFDS's choice); at most the number of examples in --source "
                        "(every file needs one: more is refused before anything is encoded)")
    p.add_argument("--chunk_size", type=ArgumentParser.integer(1), default=8, help="frames per VAE call")
    return run_cli(lambda: run(p.parse_args(argv)))


def run(args) -> None:
    require_data_extra("to read and write datasets")
    # Imported after parsing: TFDS, JAX and the networks take seconds, --help must not wait for them.
    import jax
    import numpy as np

    from animatediff_jax.data.dataset_output import check_dataset_output, fresh_build
    from animatediff_jax.data.pipeline import VIDEO_FEATURES, load_source
    from animatediff_jax.data.precomputed_latents import PrecomputedLatents, precompute, text_encoder, vae_encoder
    from animatediff_jax.loading import HUB_PATTERNS, locate, read_base, refuse_nonfinite, require_exists
    from animatediff_jax.models.clip_text import CLIPTextModel
    from animatediff_jax.models.vae import AutoencoderKL
    from animatediff_jax.tokenizer import PromptTokenizer, check_tokenizer

    # every output and input checked before the models load, not after the encoding
    out = check_dataset_output(args.data_dir, PrecomputedLatents, args.name, args.overwrite)
    require_exists(args.source, "--source")
    source = load_source(args.source, what="--source", needs=(VIDEO_FEATURES,))
    if (args.num_shards or 0) > len(source):
        raise UsageError(f"--num_shards {args.num_shards}: more than the {len(source)} examples of --source "
                         f"{args.source} (every ArrayRecord file needs an example)")
    base_path = locate(args.pretrained_model_path, "--pretrained_model_path", HUB_PATTERNS["sd"], args.variant)
    if args.tokenizer_path:
        tokenizer_path = check_tokenizer(locate(args.tokenizer_path, "--tokenizer_path", HUB_PATTERNS["tokenizer"]),
                                         "--tokenizer_path")
        if not tokenizer_path:
            raise InputError(f"--tokenizer_path {args.tokenizer_path}: no CLIP tokenizer there (needs vocab.json + "
                             "merges.txt, or tokenizer.json)")
    else:
        tokenizer_path = check_tokenizer(base_path, "--pretrained_model_path")

    # what the base is, before what it lacks; read as stored (zero-copy: no loader warning before the refusal,
    # as sample's), its NaN/Inf refused (else a NaN dataset, written), then cast
    base = read_base(base_path, variant=args.variant)
    vae, text = (jax.tree.map(lambda a: np.asarray(a, np.float32), refuse_nonfinite(
        params, f"--pretrained_model_path {args.pretrained_model_path} ({name})",
        harm="every latent or embedding pre-computed with it would come out NaN"))
        for name, params in (("vae", base.vae), ("text_encoder", base.text_encoder)))
    if not tokenizer_path:
        raise InputError(f"{args.pretrained_model_path}: no tokenizer found; pass --tokenizer_path")
    tokenizer = PromptTokenizer.from_pretrained(tokenizer_path, max_length=base.text_config.max_position_embeddings)
    given = args.pretrained_model_path
    model = os.path.abspath(given) if os.path.exists(given) else given  # a hub id as given
    with fresh_build(args.data_dir, PrecomputedLatents, args.name) as data_dir:
        precompute(source, vae_encoder(AutoencoderKL(base.vae_config), vae, args.chunk_size),
                   text_encoder(CLIPTextModel(base.text_config), text, tokenizer),
                   data_dir, args.name, batch_size=args.batch_size, num_shards=args.num_shards,
                   scaling_factor=base.vae_config.scaling_factor, model=model, source_name=args.source)
    print(f"pre-computed dataset written to {out}")


if __name__ == "__main__":
    plain_warnings()
    exit_cli(main())
