"""The two LoRA strength rules of `convert.lora` vs NumPy, on a LoRA whose alpha (1) differs from its rank (8).

kohya / A1111 (what `--lora PATH:SCALE` means): W += scale · (alpha / rank) · up @ down.
original AnimateDiff (`convert_lora`, what a prompt config's `lora_alpha` means): W += lora_alpha · up @ down,
the file's per-layer `.alpha` ignored.
"""
import numpy as np
import pytest

from convert.lora import apply_lora_files, fuse, read_lora
from convert.naming import flatten, state_dict_to_flax
from tests.convert.lora_helpers import (flax_params, kohya_state_dict, numpy_fused, save, text_lora_modules,
                                        tiny_text_encoder, tiny_unet, unet_lora_modules)
from tests.utils import rel_err

RANK, ALPHA, SCALE = 8, 1.0, 0.6


@pytest.fixture(scope="module")
def nets():
    return tiny_unet(), tiny_text_encoder()


def numpy_reference(module, modules: dict, prefix: str, sd: dict, factor: float) -> dict:
    """Flax params of `module` with W + factor · up @ down at every LoRA'd layer, computed in NumPy."""
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    for name in modules:
        key = prefix + name.replace(".", "_")
        weights[name + ".weight"] = numpy_fused(weights[name + ".weight"], sd[f"{key}.lora_up.weight"].numpy(),
                                                sd[f"{key}.lora_down.weight"].numpy(), factor)
    return state_dict_to_flax(weights)


@pytest.mark.parametrize("rule,factor", [("kohya", SCALE * ALPHA / RANK), ("original", SCALE)])
def test_rule_vs_numpy(tmp_path, nets, rule, factor):
    unet, te = nets
    sd = kohya_state_dict(unet, te, rank=RANK, alpha=ALPHA)  # attention, ff, LoCon convs, text encoder
    save(sd, tmp_path / "k.safetensors")
    ours = apply_lora_files({"unet": flax_params(unet), "text_encoder": flax_params(te)},
                            [(str(tmp_path / "k.safetensors"), SCALE)], alpha_rule=rule)
    for component, module, modules, prefix in (
            ("unet", unet, unet_lora_modules(unet, locon=True), "lora_unet_"),
            ("text_encoder", te, text_lora_modules(te), "lora_te_text_model_")):
        ref, base, got = (flatten(t) for t in (numpy_reference(module, modules, prefix, sd, factor),
                                               flax_params(module), ours[component]))
        assert set(got) == set(ref)
        changed = [p for p in ref if not np.array_equal(ref[p], base[p])]
        assert len(changed) == len(modules) > 10
        for p in ref:
            assert rel_err(got[p], ref[p]) <= 1e-6, ("/".join(p), rule)


def test_rules_differ_by_alpha_over_rank(tmp_path, nets):
    """The same file: the original rule's update is rank/alpha = 8 times the kohya rule's."""
    unet, _ = nets
    save(kohya_state_dict(unet, None, rank=RANK, alpha=ALPHA, locon=False), tmp_path / "k.safetensors")
    params = flax_params(unet)
    lora = read_lora(tmp_path / "k.safetensors", {"unet": params})["unet"]
    base = flatten(params)
    kohya, original = (flatten(fuse(params, lora, SCALE, alpha_rule=r)) for r in ("kohya", "original"))
    for path in lora:
        d_k, d_o = kohya[path] - base[path], original[path] - base[path]
        assert rel_err(d_o, (RANK / ALPHA) * d_k) <= 1e-5


def test_unknown_rule_refused(tmp_path, nets):
    unet, _ = nets
    save(kohya_state_dict(unet, None, rank=2, locon=False), tmp_path / "k.safetensors")
    with pytest.raises(ValueError, match="alpha_rule must be one of"):
        apply_lora_files({"unet": flax_params(unet)}, [(str(tmp_path / "k.safetensors"), 1.0)], alpha_rule="a1111")
