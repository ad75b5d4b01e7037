"""A model path given to the wrong flag, an empty folder, a garbage checkpoint (a stranger's findings):
one line naming the flag and the file, what it is and which flag takes it, before any model loads."""
import os
import shutil
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from animatediff_jax import evaluate, loading, sample
from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from convert.__main__ import main as convert_main

BASE = os.path.join(MINIATURE, "base")
UNET = os.path.join(BASE, "unet.safetensors")
MOTION = motion_path(MINIATURE, "B")
MOTION_LORA = os.path.join(MINIATURE, "motion_lora_right.safetensors")  # original (kohya-like) format
LORA = os.path.join(MINIATURE, "lora_checker.safetensors")


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))

    def go(*flags):
        code = sample.main([*flags, "--prompt", "a cat", "--out", str(tmp_path / "out")])
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1, lines
        assert not (tmp_path / "out").exists()
        return code, lines[0]
    return go


@pytest.mark.parametrize("flags,code,line", [
    (["--dreambooth", UNET], 1, f"error: --dreambooth {UNET}: a converted UNet alone (Flax params), not what "
                                f"--dreambooth takes; --base or --dreambooth take the folder holding it ({BASE})"),
    (["--base", UNET], 1, f"error: --base {UNET}: a converted UNet alone (Flax params), not what --base takes; "
                          f"--base or --dreambooth take the folder holding it ({BASE})"),
    (["--dreambooth", MOTION], 1, f"error: --dreambooth {MOTION}: a converted motion module (v2), not what "
                                  "--dreambooth takes; --motion-module takes it"),
    (["--motion-module", BASE], 1, f"error: --motion-module {BASE}: a converted SD1.x model folder, not what "
                                   "--motion-module takes; --base or --dreambooth take it"),
    (["--lora", MOTION], 1, f"error: --lora {MOTION}: a converted motion module (v2), not what --lora takes; "
                            "--motion-module takes it"),
    # other tools' files, told apart by their keys (a motion LoRA as the motion module said 'missing key ...')
    (["--motion-module", MOTION_LORA], 1, f"error: --motion-module {MOTION_LORA}: a motion LoRA, not what "
                                          "--motion-module takes; --motion-lora takes it"),
    (["--dreambooth", LORA], 1, f"error: --dreambooth {LORA}: a LoRA, not what --dreambooth takes; --lora or "
                                   "--domain-adapter take it"),
])
def test_our_files_given_to_the_wrong_flag(run, flags, code, line):
    assert run(*flags) == (code, line)


def test_an_empty_base_folder_says_what_was_expected(run, tmp_path):
    (tmp_path / "empty").mkdir()
    code, line = run("--base", str(tmp_path / "empty"))
    assert code == 1
    assert line.startswith(f"error: --base {tmp_path / 'empty'}: no SD1.x model here: expected a diffusers SD1.x "
                           "folder")


@pytest.mark.parametrize("damage", ["missing", "truncated", "not ours"])
def test_a_converted_folder_with_a_bad_file_names_that_file(run, tmp_path, damage):
    folder = tmp_path / "base"
    folder.mkdir()
    for name in ("unet", "text_encoder", "vae"):
        os.link(os.path.join(BASE, f"{name}.safetensors"), folder / f"{name}.safetensors")
    os.symlink(os.path.join(BASE, "tokenizer"), folder / "tokenizer")
    vae = folder / "vae.safetensors"
    vae.unlink()
    if damage == "truncated":
        data = open(os.path.join(BASE, "vae.safetensors"), "rb").read()
        vae.write_bytes(data[:len(data) // 2])
    elif damage == "not ours":
        save_file({"x": np.zeros(2, np.float32)}, str(vae))
    code, line = run("--base", str(folder))
    assert code == 1
    assert line.startswith(f"error: --base {folder}: an incomplete converted SD1.x folder: "), line
    assert {"missing": "vae.safetensors is missing",
            "truncated": f"{vae}: truncated safetensors file: the tensors cover ",
            "not ours": "vae.safetensors is not a converted network (no format=flax metadata)"}[damage] in line, line


@pytest.mark.parametrize("role, holds", [("vae", "unet"), ("text_encoder", "vae"), ("unet", "text_encoder")])
def test_a_converted_folder_with_another_network_in_a_role_names_that_file(run, tmp_path, role, holds):
    folder = tmp_path / "base"
    folder.mkdir()
    for name in ("unet", "text_encoder", "vae"):
        os.link(os.path.join(BASE, f"{(holds if name == role else name)}.safetensors"), folder / f"{name}.safetensors")
    os.symlink(os.path.join(BASE, "tokenizer"), folder / "tokenizer")
    code, line = run("--base", str(folder))
    assert code == 1
    assert f"{folder / (role + '.safetensors')}: holds the params of a " in line and f"not of the {role} " in line, line


def test_a_converted_folder_without_tokenizer_is_not_called_a_single_file(run):
    code, line = run("--base", os.path.join(MINIATURE, "dreambooth"))
    assert code == 1 and "(a folder without tokenizer/)" in line and "single file" not in line


def _base_with_tokenizer(tmp_path, damage):
    """The shipped converted base (linked) with its tokenizer/ copied and damaged."""
    folder = tmp_path / "base"
    folder.mkdir()
    for name in ("unet", "text_encoder", "vae"):
        os.link(os.path.join(BASE, f"{name}.safetensors"), folder / f"{name}.safetensors")
    shutil.copytree(os.path.join(BASE, "tokenizer"), folder / "tokenizer")
    vocab = folder / "tokenizer" / "vocab.json"
    if damage == "no vocab.json":
        vocab.unlink()
    else:
        vocab.write_text({"corrupt": "{", "not a vocabulary": "[1]"}[damage])
    return folder


@pytest.mark.parametrize("damage,problem", [
    ("no vocab.json", "tokenizer: an incomplete CLIP tokenizer: needs vocab.json + merges.txt, or tokenizer.json; "
                      "it holds merges.txt, tokenizer_config.json"),
    ("corrupt", "tokenizer/vocab.json: not a readable tokenizer file: "),
    ("not a vocabulary", "tokenizer: not a usable CLIP tokenizer: Error while initializing BPE"),
])
def test_a_damaged_tokenizer_folder_is_named_before_any_load(run, tmp_path, damage, problem):
    folder = _base_with_tokenizer(tmp_path, damage)
    code, line = run("--base", str(folder))
    assert code == 1 and line.startswith(f"error: --base {folder}/{problem}"), line
    code, line = run("--base", MINIATURE + "/base", "--tokenizer", str(folder / "tokenizer"))
    assert code == 1 and line.startswith(f"error: --tokenizer {folder}/{problem}"), line


@pytest.mark.parametrize("torch_installed", [True, False])
def test_garbage_ckpt_is_not_a_checkpoint_with_or_without_torch(run, tmp_path, monkeypatch, capsys, torch_installed):
    if not torch_installed:
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    bad = tmp_path / "g.ckpt"
    bad.write_bytes(b"garbage!")
    want = f"{bad}: not a PyTorch checkpoint (neither a zip archive nor a pickle); corrupt or truncated?"
    code, line = run("--dreambooth", str(bad))
    assert code == 1 and line.endswith(want), line
    assert convert_main(["base", str(bad), str(tmp_path / "conv"), "-q"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {want}"]


# --------------------------------------------------------------------------- LoRAs, checked before any weights load


def _motion_lora(path):
    """A MotionLoRA (original processor format) for the shipped motion module: one update of its first
    temporal attention's to_q."""
    kernel = load_file(MOTION)["down_blocks_0/motion_modules_0/transformer_blocks_0/attn1/to_q/kernel"]
    prefix = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor"
    save_file({f"{prefix}.to_q_lora.down.weight": np.ones((2, kernel.shape[0]), np.float32),
               f"{prefix}.to_q_lora.up.weight": np.ones((kernel.shape[1], 2), np.float32)}, str(path))
    return str(path)


def test_a_spatial_lora_given_as_a_motion_lora_is_named_before_any_load(run):
    code, line = run("--motion-module", MOTION, "--motion-lora", LORA)
    assert code == 1
    assert line.startswith(f"error: --motion-lora {LORA}: a LoRA of the image UNet's layers (e.g. 'lora_unet_")
    assert line.endswith("not a MotionLoRA (which targets motion_modules): apply it as a LoRA (--lora)")


def test_a_motion_lora_given_as_a_lora_is_named_before_any_load(run, tmp_path):
    path = _motion_lora(tmp_path / "zoom.safetensors")
    code, line = run("--lora", path)
    assert code == 1 and line.startswith(f"error: --lora {path}: a MotionLoRA (it targets motion_modules")
    assert line.endswith("not a LoRA of the image UNet: apply it as a MotionLoRA (--motion-lora)")


def test_a_lora_of_another_width_is_refused_before_any_load(run, tmp_path):
    # e.g. an SD2 LoRA (cross-attention 1024) on an SD1.x model: the names exist, the shapes do not.
    lora = load_file(LORA)
    key = sorted(k for k in lora if k.endswith("attn2_to_k.lora_down.weight"))[0]
    lora[key] = np.concatenate([lora[key], lora[key]], axis=1)
    save_file(lora, str(tmp_path / "wide.safetensors"))
    code, line = run("--lora", str(tmp_path / "wide.safetensors"))
    assert code == 1
    assert line.startswith(f"error: --lora {tmp_path / 'wide.safetensors'}: "), line
    assert "attn2/to_k/kernel has shape" in line and "but the LoRA update is" in line, line


def test_up_and_down_of_different_ranks_are_refused_before_any_load(run, tmp_path):
    # A stranger's finding: this passed the shape check and crashed with a traceback while fusing.
    lora = load_file(LORA)
    key = sorted(k for k in lora if k.endswith("attn1_to_k.lora_down.weight"))[0]
    lora[key] = np.concatenate([lora[key], lora[key][:1]], axis=0)
    save_file(lora, str(tmp_path / "ranks.safetensors"))
    code, line = run("--lora", str(tmp_path / "ranks.safetensors"))
    assert code == 1 and line.startswith(f"error: --lora {tmp_path / 'ranks.safetensors'}: "), line
    assert "do not share a rank" in line, line


def test_a_motion_lora_that_fits_passes_the_checks(tmp_path):
    from animatediff_jax import loading
    files = loading.ModelFiles(BASE, motion_module=MOTION, motion_loras=((_motion_lora(tmp_path / "z.safetensors"), 0.5),))
    checked = loading.check_files(files, str(tmp_path / "cache"))
    (lora,) = checked.motion_loras
    assert lora.scale == 0.5 and list(lora.updates["unet"]) == [
        ("down_blocks_0", "motion_modules_0", "transformer_blocks_0", "attn1", "to_q", "kernel")]


def test_the_python_api_refuses_a_lora_scale_out_of_range(tmp_path):
    from animatediff_jax import loading
    files = loading.ModelFiles(BASE, motion_module=MOTION, motion_loras=((_motion_lora(tmp_path / "z.safetensors"), 1e30),))
    with pytest.raises(UsageError, match=r"--motion-lora .*z.safetensors: scale must be in \[-100, 100\], got 1e\+30"):
        loading.check_files(files, str(tmp_path / "cache"), loading.FLAGS)


@pytest.mark.parametrize("entry,code,line", [
    (f"dreambooth_path: {MOTION}", 1, f"dreambooth_path {MOTION}: a converted motion module (v2), not what "
                                   "dreambooth_path takes; motion_module takes it"),
    (f"motion_module: {BASE}", 1, f"motion_module {BASE}: a converted SD1.x model folder, not what motion_module "
                               "takes; --base or dreambooth_path take it"),
    (f"lora_model_path: {MOTION}", 1, f"lora_model_path {MOTION}: a converted motion module (v2), not what "
                                   "lora_model_path takes; motion_module takes it"),
    (f"motion_module_lora_configs: [{{path: {LORA}, alpha: 1.0}}]", 2,
     "motion_module_lora_configs: needs a motion module (motion_module)"),
    ("guidance_scale: -5", 2, "--guidance-scale/guidance_scale: must be in [0, 100], got -5 (≤ 1 samples without "
                              "classifier-free guidance)"),
    ("guidance_scale: 1e300", 2, "--guidance-scale/guidance_scale: must be in [0, 100], got 1e+300 (≤ 1 samples "
                                 "without classifier-free guidance)"),  # overflowed after sampling
    (f"motion_module: {MOTION}\n  motion_scale: -1", 2, "--motion-scale/motion_scale: must be in [0, 100], got -1 "
     "(0: no motion module)"),
    # Scales far beyond any use saturated the video (1e30: flat frames, exit 0) or overflowed into NaN.
    (f"motion_module: {MOTION}\n  motion_block_scales: {{mid_block: 1e30}}", 2,
     "--motion-block-scales/motion_block_scales.mid_block: must be in [0, 100], got 1e+30"),
    (f"lora_model_path: {LORA}\n  lora_alpha: 1e30", 2,
     f"lora_model_path {LORA}: scale (lora_alpha): must be in [-100, 100], got 1e+30"),
    (f"motion_module: {MOTION}\n  motion_module_lora_configs: [{{path: {MOTION_LORA}, alpha: -500}}]", 2,
     f"motion_module_lora_configs {MOTION_LORA}: scale (alpha): must be in [-100, 100], got -500"),
])
def test_a_prompt_config_entry_names_its_file_by_config_entry_and_key(tmp_path, monkeypatch, capsys, entry, code, line):
    """The user wrote a config, not flags: an entry's file of the wrong kind, or a MotionLoRA without a
    motion module, is named by the config, the entry and the key (was `--dreambooth`, `--motion-lora`)."""
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    config = tmp_path / "c.yaml"
    config.write_text(f"- prompt: [a cat]\n  {entry}\n")
    assert sample.main([str(config), "--base", BASE, "--out", str(tmp_path / "out")]) == code
    assert capsys.readouterr().err == f"error: {config}: entry 0: {line}\n"


def _truncated_unet_miniature(tmp_path):
    """The shipped miniature (linked) with its base's unet.safetensors cut to 1000 bytes."""
    out = tmp_path / "miniature"
    shutil.copytree(MINIATURE, out, copy_function=os.link)
    unet = out / "base" / "unet.safetensors"
    unet.unlink()
    unet.write_bytes(open(UNET, "rb").read()[:1000])
    return out


@pytest.mark.parametrize("command", ["convert base", "evaluate", "read_base"])
def test_a_truncated_converted_folder_is_called_incomplete_by_every_command(tmp_path, capsys, command):
    """sample --base said so; convert base, evaluate --weights and read_base (data.precompute, train) said
    'not a diffusers SD folder: .../unet/config.json is missing'."""
    weights = _truncated_unet_miniature(tmp_path)
    base = weights / "base"
    if command == "convert base":
        assert convert_main(["base", str(base), str(tmp_path / "out"), "-q"]) == 1
        err = capsys.readouterr().err
    elif command == "evaluate":
        assert evaluate.main(["--weights", str(weights), "--samples", "1", "--results", str(tmp_path / "r.md")]) == 1
        err = capsys.readouterr().err.splitlines()[-1]  # after the rows it leaves out (no schedule-C module)
    else:
        with pytest.raises(InputError) as e:
            loading.read_base(str(base))
        err = str(e.value)
    assert f"{base}: an incomplete converted SD1.x folder: {base}/unet.safetensors: truncated" in err, err


def test_a_motion_module_folder_with_a_broken_link_or_other_files_says_what_it_lacks(run, tmp_path):
    folder = tmp_path / "not a module"
    (folder / "notes").mkdir(parents=True)
    os.symlink(tmp_path / "nowhere", folder / "weights.safetensors")  # a broken link among model-like names
    (folder / "notes" / "big.dat").write_bytes(b"x" * 10)
    code, line = run("--motion-module", str(folder))
    assert code == 1
    assert line.startswith(f"error: --motion-module {folder}: a MotionAdapter folder needs config.json"), line


def test_a_folders_cache_key_follows_its_model_files_only(tmp_path):
    folder = tmp_path / "adapter"
    (folder / "unet").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"1")
    key = loading.cache_key(str(folder))
    (folder / "README.md").write_text("words")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.json").write_text("{}")
    os.symlink(tmp_path / "nowhere", folder / "gone.json")
    assert loading.cache_key(str(folder)) == key  # other files, hidden folders and broken links left out
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"22")
    assert loading.cache_key(str(folder)) != key  # a weights file one level down is part of the key


def test_trained_lora_factors_given_to_a_lora_flag_point_to_the_exported_lora(run, tmp_path):
    """A stranger passed a MotionLoRA run's lora_factors.safetensors to --motion-lora and was told only that
    'no sample flag takes it'."""
    from animatediff_jax.checkpoint import save_params
    factors = str(tmp_path / "lora_factors.safetensors")
    save_params(factors, {"lora": {"down": np.zeros((2, 4), np.float32)}}, source="animatediff_jax.train",
                metadata={"alpha": "4"})
    assert run("--motion-module", MOTION, "--motion-lora", f"{factors}:1.0") == (1, (
        f"error: --motion-lora {factors}: LoRA factors written by training (lora_factors.safetensors), not what "
        "--motion-lora takes; --motion-lora or --lora take the LoRA the run exported beside it, or one that "
        "`python -m convert export-motion-lora` writes from it"))
