"""MotionLoRA (original and diffusers formats, several combined) and the v3 domain adapter."""
import copy

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler
from safetensors.torch import save_file

from animatediff_jax.params import flatten
from convert.export import export_motion_lora
from convert.lora import LoraError, fuse_domain_adapter, fuse_motion_loras, read_lora
from convert.motion import load_motion_module
from convert.naming import flax_to_state_dict
from tests.convert.lora_helpers import flax_params, numpy_fused, processor_state_dict, tiny_text_encoder, tiny_unet
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original
from tests.utils import rel_err


def motion_lora(adapter, seed: int, rank: int = 4, diffusers_format: bool = False) -> dict[str, torch.Tensor]:
    """Random MotionLoRA on every attn1/attn2 q/k/v/out of `adapter`, original or diffusers naming."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, w in adapter.state_dict().items():
        if not (".attn1." in key or ".attn2." in key) or not key.endswith("weight"):
            continue
        attn, target = key.split(".attn")[0], key.split(".")[-2]
        target = "to_out" if target == "0" else target
        block = "attn" + key.split(".attn")[1][0]
        if diffusers_format:
            prefix = f"unet.{attn}.{block}"
        else:
            head, tail = attn.split(".transformer_blocks.")
            prefix = f"{head}.temporal_transformer.transformer_blocks.{tail}.attention_blocks.{int(block[-1]) - 1}"
        sd[f"{prefix}.processor.{target}_lora.down.weight"] = torch.randn(rank, w.shape[1], generator=gen) * 0.1
        sd[f"{prefix}.processor.{target}_lora.up.weight"] = torch.randn(w.shape[0], rank, generator=gen) * 0.1
    assert len(sd) == 2 * 4 * 2 * sum(1 for k in adapter.state_dict() if k.endswith("proj_in.weight"))
    return sd


def numpy_reference(adapter, loras):
    """Adapter state dict with W += alpha · up @ down for each (original-format LoRA, alpha)."""
    ref = {k: v.numpy().astype(np.float64) for k, v in adapter.state_dict().items() if "pos_embed" not in k}
    for sd, alpha in loras:
        for key, down in sd.items():
            if ".down." not in key:
                continue
            up = sd[key.replace(".down.", ".up.")].numpy()
            module, target = key.split(".processor.")
            target = target.split("_lora")[0].replace("to_out", "to_out.0")
            module = module.replace(".temporal_transformer", "").replace(".attention_blocks.0", ".attn1")
            module = module.replace(".attention_blocks.1", ".attn2")
            weight = f"{module}.{target}.weight"
            ref[weight] = numpy_fused(ref[weight], up, down.numpy(), alpha)
    return ref


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    d = tmp_path_factory.mktemp("v2")
    adapter = random_adapter("v2", (32, 64), 2)
    write_original(original_state_dict(adapter), d / "mm.ckpt")
    return adapter, load_motion_module(d / "mm.ckpt", heads=2, norm_num_groups=8)


def test_original_motion_loras_combined_vs_numpy(tmp_path, v2):
    adapter, mm = v2
    a, b = motion_lora(adapter, 1), motion_lora(adapter, 2, rank=2)
    torch.save({"state_dict": a}, tmp_path / "zoom_in.ckpt")
    save_file(b, str(tmp_path / "pan_left.safetensors"))
    fused = fuse_motion_loras(mm.params, [(tmp_path / "zoom_in.ckpt", 0.8), (tmp_path / "pan_left.safetensors", 0.5)])
    ref = numpy_reference(adapter, [(a, 0.8), (b, 0.5)])
    ours = flax_to_state_dict(fused)
    assert set(ours) == set(ref)
    changed = 0
    for k, v in ref.items():
        assert rel_err(ours[k], v) <= 1e-6, k
        changed += not np.array_equal(ours[k], adapter.state_dict()[k].numpy())
    assert changed == 4 * 2 * 11  # q, k, v, out of both attentions in 2x2 down + 1 mid + 2x3 up modules


def test_diffusers_motion_lora_vs_animatediff_pipeline(tmp_path, v2):
    adapter, mm = v2
    sd = motion_lora(adapter, 3, diffusers_format=True)
    save_file(sd, str(tmp_path / "diffusers_motion_lora.safetensors"))
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=tiny_text_encoder(), tokenizer=None, unet=tiny_unet(),
                               motion_adapter=copy.deepcopy(adapter), scheduler=DDIMScheduler())
    pipe.load_lora_weights(str(tmp_path / "diffusers_motion_lora.safetensors"))
    pipe.fuse_lora(lora_scale=0.7)
    pipe.unload_lora_weights()
    ref = {k: v.numpy() for k, v in pipe.unet.state_dict().items() if ".motion_modules." in k and "pos_embed" not in k}
    ours = flax_to_state_dict(fuse_motion_loras(mm.params, [(tmp_path / "diffusers_motion_lora.safetensors", 0.7)]))
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert rel_err(ours[k], v) <= 1e-5, k


def test_motion_lora_on_module_without_mid_block_refused(tmp_path, v2):
    adapter, _ = v2
    torch.save(motion_lora(adapter, 1), tmp_path / "zoom.ckpt")
    v3 = random_adapter("v3", (32, 64), 2)
    write_original(original_state_dict(v3), tmp_path / "v3.ckpt")
    mm3 = load_motion_module(tmp_path / "v3.ckpt", heads=2, norm_num_groups=8)
    with pytest.raises(LoraError, match=r"zoom.ckpt.*mid_block.*trained for a v2 motion module"):
        fuse_motion_loras(mm3.params, [(tmp_path / "zoom.ckpt", 1.0)])
    with pytest.raises(LoraError, match="must be a number"):
        fuse_motion_loras(mm3.params, [(tmp_path / "zoom.ckpt", "1.0x")])


def test_motion_lora_export_round_trip(tmp_path, v2):
    adapter, mm = v2
    save_file(motion_lora(adapter, 4, diffusers_format=True), str(tmp_path / "in.safetensors"))
    lora = read_lora(tmp_path / "in.safetensors", {"unet": mm.params})["unet"]
    export_motion_lora(lora, tmp_path / "out.ckpt")
    written = torch.load(tmp_path / "out.ckpt", weights_only=True)
    assert all(".temporal_transformer." in k and ".processor." in k for k in written)
    direct = flatten(fuse_motion_loras(mm.params, [(tmp_path / "in.safetensors", 0.9)]))
    again = flatten(fuse_motion_loras(mm.params, [(tmp_path / "out.ckpt", 0.9)]))
    for p, v in direct.items():
        assert rel_err(again[p], v) <= 1e-6, p


def test_domain_adapter_vs_numpy(tmp_path):
    unet = tiny_unet(seed=2)
    sd = processor_state_dict(unet, seed=5, prefix="", only=lambda n: ".attentions." in n)
    torch.save({"state_dict": sd, "animatediff_config": {"note": "not a tensor"}}, tmp_path / "v3_adapter.ckpt")
    fused = flax_to_state_dict(fuse_domain_adapter(flax_params(unet), tmp_path / "v3_adapter.ckpt", scale=0.6))
    ref = {k: v.numpy().astype(np.float64) for k, v in unet.state_dict().items()}
    for key, down in sd.items():
        if ".down." in key:
            module, target = key.split(".processor.")
            weight = f"{module}.{target.split('_lora')[0].replace('to_out', 'to_out.0')}.weight"
            ref[weight] = numpy_fused(ref[weight], sd[key.replace(".down.", ".up.")].numpy(), down.numpy(), 0.6)
    changed = sum(not np.array_equal(fused[k], unet.state_dict()[k].numpy()) for k in ref)
    assert changed == len(sd) // 2 > 0
    for k, v in ref.items():
        assert rel_err(fused[k], v) <= 1e-6, k
