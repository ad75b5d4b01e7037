"""CLI command `controlnet`: an SD1.x ControlNet or AnimateDiff v3 SparseCtrl encoder -> Flax params.

    python -m convert controlnet control_v11p_sd15_canny.pth canny.safetensors
    python -m convert controlnet v3_sd15_sparsectrl_scribble.ckpt scribble.safetensors
    python -m convert controlnet lllyasviel/control_v11f1p_sd15_depth depth.safetensors   # hub id (cached)
"""
from __future__ import annotations

import argparse

from animatediff_jax.errors import UsageError
from animatediff_jax.hub_ids import revision_name, variant_name
from animatediff_jax.outputs import check_output, input_path, output_path
from convert.commands_base import DTYPES, VARIANT_HELP, add_output_options, json_object


def _controlnet(args) -> int:
    from convert.controlnet import convert_controlnet, plan_controlnet  # local: the CLI's help stays light
    from convert.sources import warn_unused_variants
    overrides = json_object(args.overrides, "--overrides", '{"global_pool_conditions": true}')
    check_output(args.output, name="output", overwrite=args.overwrite, suffixes=(".safetensors",))
    plan = plan_controlnet(args.source, variant=args.variant, revision=args.revision, overrides=overrides,
                           replace_pe=args.replace_pe)
    if args.replace_pe and (plan.kind != "sparsectrl" or plan.source_format == "flax"):
        plan.close()
        raise UsageError(f"--replace-pe: not used: {args.source} is "
                         + ("a ControlNet, which has no motion modules" if plan.kind != "sparsectrl" else
                            "a converted SparseCtrl encoder, which stores no position encoding"))
    net = convert_controlnet(args.source, args.output, dtype=args.dtype, allow_nonfinite=args.allow_nonfinite,
                             plan=plan)
    c = net.config
    motion = f", motion modules: {net.motion.num_attention_heads} heads, length {net.motion.max_seq_length}" \
        if net.motion else ""
    print(f"{args.output}: {net.kind}, blocks {list(c.block_out_channels)}, condition {c.conditioning_channels} "
          f"channels at 1/{c.condition_downsample_factor()} latent scale{motion}")
    warn_unused_variants([args.variant], plan.variants)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "controlnet", help="SD1.x ControlNet or v3 SparseCtrl encoder -> Flax params",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Convert an SD1.x ControlNet or an AnimateDiff v3 SparseCtrl encoder into Flax params
(.safetensors; ControlNetConfig, kind and the SparseCtrl motion config in the metadata), for
`python -m animatediff_jax.sample --controlnet` / `--sparsectrl`.

SOURCE: a diffusers ControlNetModel / SparseControlNetModel folder or hub id (owner/name, read from
the Hugging Face cache), an LDM-layout single file (control_v11p_sd15_*.pth / .safetensors, keys
control_model.* or bare), or an original SparseCtrl .ckpt (v3_sd15_sparsectrl_rgb.ckpt, _scribble).
SDXL and SD2.x ControlNets are refused.

Single files do not store the head counts (SD1.x: 8), global_pool_conditions (true only for the
v1.1 shuffle ControlNet) or the SparseCtrl motion heads (8): set them with --overrides.""")
    p.add_argument("source", type=input_path, help="ControlNet / SparseCtrl folder, hub id or single file")
    p.add_argument("output", type=output_path, help="output .safetensors (Flax params)")
    p.add_argument("--dtype", choices=DTYPES, help="store floating params in this dtype (default: as in the source)")
    p.add_argument("--variant", type=variant_name, help=VARIANT_HELP)
    p.add_argument("--revision", type=revision_name, help="hub revision")
    p.add_argument("--overrides", metavar="JSON",
                   help='diffusers config keys over the inferred config, e.g. \'{"global_pool_conditions": true}\'')
    p.add_argument("--replace-pe", action="store_true",
                   help="accept a SparseCtrl encoder whose stored pos_encoder.pe is not the standard sinusoid (a "
                        "trained or stretched position encoding), converting it with the sinusoid in its place: it "
                        "then behaves differently than in the original and diffusers (default: refused)")
    add_output_options(p)
    p.set_defaults(run=_controlnet, paths=("output", ("source",)))
