"""diffusers/PEFT LoRA (lora_A/lora_B, alphas in the metadata) and the older processor format, vs diffusers;
PEFT `save_pretrained` adapters vs peft's own `merge_and_unload()`."""
import copy
import json
import shutil

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open

from animatediff_jax.params import flatten
from convert.lora import LoraError, apply_lora_files, read_lora
from tests.convert.lora_helpers import (TEXT_TARGETS, diffusers_fused, flax_params, processor_state_dict, save,
                                        tiny_pipeline, tiny_text_encoder, tiny_unet)
from tests.utils import rel_err


@pytest.fixture(scope="module")
def nets():
    return tiny_unet(seed=1), tiny_text_encoder(seed=1)


def write_peft(unet, te, path_dir, metadata: bool):
    """Save a PEFT LoRA the way diffusers' training scripts do (StableDiffusionPipeline.save_lora_weights)."""
    unet, te = copy.deepcopy(unet), copy.deepcopy(te)
    unet_cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                          target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2", "conv1"],
                          alpha_pattern={"conv1": 2})
    te_cfg = LoraConfig(r=2, lora_alpha=3, init_lora_weights=False, target_modules=list(TEXT_TARGETS))
    torch.manual_seed(5)
    unet.add_adapter(unet_cfg)
    te = inject_adapter_in_model(te_cfg, te)  # transformers' add_adapter wants a newer peft
    kwargs = {}
    if metadata:
        kwargs = {"unet_lora_adapter_metadata": unet_cfg.to_dict(), "text_encoder_lora_adapter_metadata": te_cfg.to_dict()}
    tiny_pipeline(unet, te).save_lora_weights(
        str(path_dir), unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(te), **kwargs)
    return path_dir / "pytorch_lora_weights.safetensors"


def check(ours, ref, base, min_changed):
    ours, ref, base = flatten(ours), flatten(ref), flatten(base)
    changed = {p for p in ref if not np.array_equal(ref[p], base[p])}
    assert len(changed) >= min_changed
    for p in ref:
        assert rel_err(ours[p], ref[p]) <= 1e-5, ("/".join(p), rel_err(ours[p], ref[p]))


@pytest.mark.parametrize("metadata", [True, False])
def test_peft_lora_matches_diffusers(tmp_path, nets, metadata):
    unet, te = nets
    path = write_peft(unet, te, tmp_path, metadata)
    with safe_open(str(path), "np") as f:
        keys = list(f.keys())
    assert any(k.startswith("unet.") and k.endswith(".lora_A.weight") for k in keys)
    assert any(k.startswith("text_encoder.") for k in keys)
    ref_u, ref_t = diffusers_fused(unet, te, [(path, 0.6)])
    ours = apply_lora_files({"unet": flax_params(unet), "text_encoder": flax_params(te)}, [(str(path), 0.6)])
    check(ours["unet"], ref_u, flax_params(unet), min_changed=40)
    check(ours["text_encoder"], ref_t, flax_params(te), min_changed=12)


def test_processor_format_matches_diffusers(tmp_path, nets):
    unet, te = nets
    save(processor_state_dict(unet, seed=4), tmp_path / "old.safetensors")
    ref_u, _ = diffusers_fused(unet, te, [(tmp_path / "old.safetensors", 1.1)])
    ours = apply_lora_files({"unet": flax_params(unet)}, [(str(tmp_path / "old.safetensors"), 1.1)])
    check(ours["unet"], ref_u, flax_params(unet), min_changed=32)


def peft_adapters(unet, te, folder, safe: bool = True):
    """PEFT `save_pretrained` folders of a UNet LoRA (rank_pattern, alpha_pattern, a LoCon conv) and a
    text-encoder LoRA (use_rslora), and each model after peft's `merge_and_unload()`."""
    torch.manual_seed(7)
    unet_cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                          target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2", "conv1"],
                          rank_pattern={"conv1": 2, "to_v": 3}, alpha_pattern={"to_k": 3, r"up_blocks\.1\..*\.to_q": 5})
    te_cfg = LoraConfig(r=4, lora_alpha=6, use_rslora=True, init_lora_weights=False, target_modules=list(TEXT_TARGETS))
    merged = {}
    for name, model, cfg in (("unet", unet, unet_cfg), ("text_encoder", te, te_cfg)):
        peft_model = get_peft_model(copy.deepcopy(model), cfg)
        peft_model.save_pretrained(str(folder / name), safe_serialization=safe)
        merged[name] = flax_params(peft_model.merge_and_unload())
    return merged


@pytest.mark.parametrize("given", ["folder", "file", "bin-folder"])
def test_peft_adapter_matches_merge_and_unload(tmp_path, nets, given):
    unet, te = nets
    ref = peft_adapters(unet, te, tmp_path, safe=given != "bin-folder")
    if given != "bin-folder":
        with safe_open(str(tmp_path / "unet" / "adapter_model.safetensors"), "np") as f:
            keys = list(f.keys())
        assert all(k.startswith("base_model.model.") for k in keys) and any(".lora_A.weight" in k for k in keys)
    paths = [tmp_path / "unet", tmp_path / "text_encoder"]
    if given == "file":
        paths = [p / "adapter_model.safetensors" for p in paths]
    ours = apply_lora_files({"unet": flax_params(unet), "text_encoder": flax_params(te)}, [(str(p), 1.0) for p in paths])
    check(ours["unet"], ref["unet"], flax_params(unet), min_changed=40)
    check(ours["text_encoder"], ref["text_encoder"], flax_params(te), min_changed=12)


def test_peft_adapter_errors(tmp_path, nets):
    unet, te = nets
    peft_adapters(unet, te, tmp_path)
    target = {"unet": flax_params(unet)}
    with pytest.raises(LoraError, match=r"empty: a LoRA folder must be a PEFT adapter .* none of adapter_model.safetensors, "):
        (tmp_path / "empty").mkdir()
        read_lora(tmp_path / "empty", target)
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "unet" / "adapter_model.safetensors", tmp_path / "bare")
    with pytest.raises(LoraError, match=r"bare/adapter_model.safetensors: a PEFT adapter .* needs the adapter_config.json"):
        read_lora(tmp_path / "bare" / "adapter_model.safetensors", target)
    cfg = json.loads((tmp_path / "unet" / "adapter_config.json").read_text())
    for edit, message in (({"use_dora": True}, "DoRA adapters are not supported"),
                          ({"peft_type": "LOHA"}, "a PEFT LOHA adapter; only LoRA")):
        (tmp_path / "bare" / "adapter_config.json").write_text(json.dumps({**cfg, **edit}))
        with pytest.raises(LoraError, match=message):
            read_lora(tmp_path / "bare", target)
