"""kohya/A1111 LoRA (diffusers-style and LDM-style paths, .alpha, LoCon convs, text encoder) fused vs diffusers."""
import numpy as np
import pytest
import torch

from animatediff_jax.params import flatten
from convert.lora import LoraError, apply_lora_files, parse_path_scale, read_lora
from tests.convert.lora_helpers import (diffusers_fused, flax_params, kohya_state_dict, save, tiny_text_encoder,
                                        tiny_unet)
from tests.utils import rel_err


@pytest.fixture(scope="module")
def nets():
    return tiny_unet(), tiny_text_encoder()


def assert_fused_equal(ours: dict, ref: dict, base: dict, min_changed: int):
    """Every tensor within 1e-5 of the reference; the same tensors changed (and enough of them)."""
    ours, ref, base = flatten(ours), flatten(ref), flatten(base)
    assert set(ours) == set(ref)
    changed = {p for p in ref if not np.array_equal(ref[p], base[p])}
    assert len(changed) >= min_changed
    for p in ref:
        if p in changed:
            assert rel_err(ours[p], ref[p]) <= 1e-5, ("/".join(p), rel_err(ours[p], ref[p]))
        else:
            np.testing.assert_array_equal(ours[p], base[p], err_msg="/".join(p))


def ours_fused(nets, loras):
    unet, te = nets
    out = apply_lora_files({"unet": flax_params(unet), "text_encoder": flax_params(te)}, loras)
    return out["unet"], out["text_encoder"]


@pytest.mark.parametrize("alpha,scale", [(2.0, 0.7), (None, 1.3)])
def test_kohya_diffusers_paths_with_locon(tmp_path, nets, alpha, scale):
    unet, te = nets
    save(kohya_state_dict(unet, te, alpha=alpha), tmp_path / "k.safetensors")
    ref_u, ref_t = diffusers_fused(unet, te, [(tmp_path / "k.safetensors", scale)])
    our_u, our_t = ours_fused(nets, [(str(tmp_path / "k.safetensors"), scale)])
    assert_fused_equal(our_u, ref_u, flax_params(unet), min_changed=100)  # attention, ff and LoCon convs
    assert_fused_equal(our_t, ref_t, flax_params(te), min_changed=12)


def test_kohya_ldm_paths(tmp_path, nets):
    """`lora_unet_input_blocks_2_1_...` names: the same tensors as a diffusers-named file, which diffusers fuses."""
    unet, te = nets
    ldm = kohya_state_dict(unet, te, ldm=True, seed=3)
    assert any(k.startswith("lora_unet_input_blocks_2_1_") for k in ldm)  # down_blocks.0.attentions.1
    assert any(k.startswith("lora_unet_output_blocks_4_1_") for k in ldm)  # up_blocks.1.attentions.1
    assert any(k.startswith("lora_unet_middle_block_1_") for k in ldm)
    assert any(k.startswith("lora_unet_output_blocks_2_1_conv") for k in ldm)  # LoCon upsampler
    save(ldm, tmp_path / "ldm.safetensors")
    save(kohya_state_dict(unet, te, ldm=False, seed=3), tmp_path / "twin.safetensors")
    ref_u, ref_t = diffusers_fused(unet, te, [(tmp_path / "twin.safetensors", 0.8)])
    our_u, our_t = ours_fused(nets, [(str(tmp_path / "ldm.safetensors"), 0.8)])
    assert_fused_equal(our_u, ref_u, flax_params(unet), min_changed=100)
    assert_fused_equal(our_t, ref_t, flax_params(te), min_changed=12)


def test_several_loras_at_once(tmp_path, nets):
    unet, te = nets
    save(kohya_state_dict(unet, te, seed=1, rank=2), tmp_path / "a.safetensors")
    save(kohya_state_dict(unet, None, seed=2, rank=8, alpha=4.0, locon=False), tmp_path / "b.safetensors")
    loras = [(tmp_path / "a.safetensors", 0.5), (tmp_path / "b.safetensors", -0.8)]
    ref_u, ref_t = diffusers_fused(unet, te, loras)
    our_u, our_t = ours_fused(nets, [(str(p), s) for p, s in loras])
    assert_fused_equal(our_u, ref_u, flax_params(unet), min_changed=100)
    assert_fused_equal(our_t, ref_t, flax_params(te), min_changed=12)


def test_normalized_form_and_numpy_arithmetic(tmp_path, nets):
    unet, _ = nets
    sd = kohya_state_dict(unet, None, rank=3, alpha=1.5)
    save(sd, tmp_path / "k.safetensors")
    lora = read_lora(tmp_path / "k.safetensors", {"unet": flax_params(unet)})["unet"]
    path = ("down_blocks_0", "resnets_1", "conv1", "kernel")  # LoCon 3x3 conv
    key = "lora_unet_down_blocks_0_resnets_1_conv1"
    np.testing.assert_array_equal(lora[path].up, sd[f"{key}.lora_up.weight"].numpy())
    assert lora[path].alpha == 1.5 and lora[path].rank == 3
    w = unet.state_dict()["down_blocks.0.resnets.1.conv1.weight"].numpy()
    up, down = sd[f"{key}.lora_up.weight"].numpy(), sd[f"{key}.lora_down.weight"].numpy()
    expected = w + 0.9 * 0.5 * np.einsum("or,rihw->oihw", up[:, :, 0, 0], down)
    ours = flatten(apply_lora_files({"unet": flax_params(unet)}, [(str(tmp_path / "k.safetensors"), 0.9)])["unet"])
    assert rel_err(ours[path], expected.transpose(2, 3, 1, 0)) <= 1e-6


def test_lora_for_absent_layers_refused(tmp_path, nets):
    unet, te = nets
    sd = kohya_state_dict(unet, None, locon=False)
    sd["lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight"] = torch.zeros(32, 4)
    sd["lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight"] = torch.zeros(4, 32)
    save(sd, tmp_path / "big.safetensors")
    with pytest.raises(LoraError, match=r"big.safetensors: 1 LoRA modules target layers the model does not have.*"
                                        r"lora_unet_down_blocks_7_attentions_0_proj_in"):
        ours_fused(nets, [(str(tmp_path / "big.safetensors"), 1.0)])


def test_text_encoder_lora_without_text_encoder_refused(tmp_path, nets):
    unet, te = nets
    save(kohya_state_dict(unet, te), tmp_path / "k.safetensors")
    with pytest.raises(LoraError, match="text_encoder LoRA weights"):
        apply_lora_files({"unet": flax_params(unet)}, [(str(tmp_path / "k.safetensors"), 1.0)])


def test_shape_mismatch_refused(tmp_path, nets):
    unet, te = nets
    sd = kohya_state_dict(unet, None, locon=False)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"  # cross-attn: in = 32 text dims
    sd[f"{key}.lora_down.weight"] = torch.zeros(4, 48)
    save(sd, tmp_path / "bad.safetensors")
    with pytest.raises(LoraError, match=r"bad.safetensors.*attn2/to_k/kernel has shape"):
        ours_fused(nets, [(str(tmp_path / "bad.safetensors"), 1.0)])


def test_non_numeric_scale_refused(tmp_path, nets):
    unet, te = nets
    save(kohya_state_dict(unet, te), tmp_path / "k.safetensors")
    with pytest.raises(LoraError, match="must be a number, got 'strong'"):
        ours_fused(nets, [(str(tmp_path / "k.safetensors"), "strong")])
    with pytest.raises(LoraError, match="must be a number"):
        parse_path_scale(f"{tmp_path / 'k.safetensors'}:0,8")
    with pytest.raises(LoraError, match="finite"):
        parse_path_scale(f"{tmp_path / 'k.safetensors'}:nan")
    assert parse_path_scale(f"{tmp_path / 'k.safetensors'}:0.75") == (str(tmp_path / "k.safetensors"), 0.75)
    assert parse_path_scale(str(tmp_path / "k.safetensors")) == (str(tmp_path / "k.safetensors"), 1.0)


def test_linear_lora_on_1x1_conv_projection(tmp_path, nets):
    """proj_in/proj_out are 1x1 convs in SD1.x; LoRAs trained with linear projections store 2-D matrices."""
    unet, _ = nets
    key = "lora_unet_down_blocks_0_attentions_1_proj_in"
    up, down = torch.randn(32, 2), torch.randn(2, 32)
    save({f"{key}.lora_up.weight": up, f"{key}.lora_down.weight": down, f"{key}.alpha": torch.tensor(1.0)},
         tmp_path / "lin.safetensors")
    fused = flatten(apply_lora_files({"unet": flax_params(unet)}, [(str(tmp_path / "lin.safetensors"), 0.5)])["unet"])
    w = unet.state_dict()["down_blocks.0.attentions.1.proj_in.weight"].numpy()  # (32, 32, 1, 1)
    expected = w + 0.25 * (up.numpy() @ down.numpy())[:, :, None, None]
    assert rel_err(fused[("down_blocks_0", "attentions_1", "proj_in", "kernel")], expected.transpose(2, 3, 1, 0)) <= 1e-6


def test_text_encoder_tree_with_text_model_prefix(tmp_path, nets):
    """Converted single files keep `text_model/` at the top of the text-encoder tree; same fusion either way."""
    unet, te = nets
    save(kohya_state_dict(unet, te, seed=7), tmp_path / "k.safetensors")
    loras = [(str(tmp_path / "k.safetensors"), 0.4)]
    flat = apply_lora_files({"unet": flax_params(unet), "text_encoder": flax_params(te)}, loras)["text_encoder"]
    nested = apply_lora_files({"unet": flax_params(unet), "text_encoder": {"text_model": flax_params(te)}},
                              loras)["text_encoder"]
    assert set(flatten(nested)) == {("text_model",) + p for p in flatten(flat)}
    for p, v in flatten(flat).items():
        np.testing.assert_array_equal(flatten(nested)[("text_model",) + p], v)


def _sdxl_kohya(te2: bool) -> dict[str, np.ndarray]:
    """A synthetic SDXL kohya LoRA: an LDM-path UNet module of SDXL's (640 channels at input_blocks.4),
    and either SDXL's second text encoder (lora_te2_, 1280 wide) or 2048-wide cross-attention."""
    modules = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (640, 640)}
    if te2:
        modules["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"] = (1280, 1280)
    else:
        modules["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"] = (640, 2048)
    out = {}
    for name, (n_out, n_in) in modules.items():
        out[f"{name}.lora_down.weight"] = np.zeros((4, n_in), np.float16)
        out[f"{name}.lora_up.weight"] = np.zeros((n_out, 4), np.float16)
        out[f"{name}.alpha"] = np.array(4, np.float16)
    return out


@pytest.mark.parametrize("te2", [True, False])
def test_sdxl_lora_refused_naming_its_family(tmp_path, nets, te2):
    """An SDXL kohya LoRA was refused only as '1 LoRA modules target layers the model does not have',
    although `convert inspect` calls it family sdxl: the refusal names the family, in `convert lora`
    (`apply_lora_files`) and in sampling's `--lora` (`read_spatial_lora`)."""
    from safetensors.numpy import save_file
    from convert.detect import describe
    from convert.lora import read_spatial_lora
    path = str(tmp_path / "xl.safetensors")
    save_file(_sdxl_kohya(te2), path)
    assert describe(path)["family"] == "sdxl"
    want = r"xl.safetensors: an SDXL LoRA \(family sdxl\); this model is SD1.x$"
    with pytest.raises(LoraError, match=want):
        ours_fused(nets, [(path, 1.0)])
    unet, te = nets
    with pytest.raises(LoraError, match=want):
        read_spatial_lora(path, {"unet": flax_params(unet), "text_encoder": flax_params(te)}, skip_other=True)
