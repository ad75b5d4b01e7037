"""Every model input of `sample` takes a hub id (`owner/name`) as `--base` does: the flags `--motion-module`,
`--dreambooth`, `--lora`, `--motion-lora`, `--domain-adapter`, `--tokenizer` (ControlNet / SparseCtrl:
test_sample_control.py)
and a prompt config's model keys, resolved through the Hugging Face cache (here a fake one, offline:
`tests.utils.cache_repo`); an id that cannot be had is one line naming the flag and the id, before any work;
`--variant` picks the weight variant of every diffusers folder, and the several-variants error asks for it.
config.yaml records the ids as given, and re-running it finds them again."""
import os
import shutil
import textwrap

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from huggingface_hub.utils import filter_repo_objects
from safetensors.numpy import save_file

from animatediff_jax import loading, sample
from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from convert.export import export_adapter
from convert.sources import HUB_PATTERNS
from tests.sampling.stop_at_load import Validated, stop_at_load
from tests.utils import as_variants, cache_repo

SIZE = ["--W", "32", "--H", "32", "--L", "4", "--steps", "2", "--no-progress", "--save-npy"]
LORA = os.path.join(MINIATURE, "lora_checker.safetensors")  # a LoRA of the miniature UNet's attention


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """The shipped miniature's motion module as a diffusers MotionAdapter folder (float32: lossless)."""
    root = tmp_path_factory.mktemp("mini_adapter")
    mm = loading.load_motion(motion_path(MINIATURE, "B"), str(root / "cache"))  # a Flax file: read in place
    export_adapter(mm.params, mm.config, root / "adapter")
    return root / "adapter"


def motion_lora(folder: str) -> None:
    """A MotionLoRA of the miniature's motion module in the hub's diffusers layout: the one file
    diffusion_pytorch_model.safetensors of guoyww/animatediff-motion-lora-* repos."""
    os.makedirs(folder)
    key = "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora"
    rng = np.random.default_rng(0)
    save_file({f"{key}.down.weight": rng.standard_normal((2, 32), np.float32),
               f"{key}.up.weight": rng.standard_normal((32, 2), np.float32)},
              os.path.join(folder, "diffusion_pytorch_model.safetensors"))


@pytest.fixture
def hub(adapter, hub_cache, tmp_path, monkeypatch):
    """The offline cache holding org/mini-adapter (the MotionAdapter as fp16 and bf16 only, no plain
    weights), org/checker (a LoRA saved as diffusers' pytorch_lora_weights.safetensors) and org/zoom (a
    MotionLoRA repo); cwd and the sample cache in tmp_path."""
    cache_repo(hub_cache, "org/mini-adapter", lambda d: as_variants(shutil.copytree(adapter, d), "fp16", "bf16"))
    cache_repo(hub_cache, "org/checker", lambda d: (os.makedirs(d), shutil.copy(LORA, os.path.join(
        d, "pytorch_lora_weights.safetensors"))))
    cache_repo(hub_cache, "org/zoom", motion_lora)
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return hub_cache


def _videos(out) -> tuple[str, dict]:
    (run,) = os.listdir(out)
    folder = os.path.join(out, run)
    return folder, {f: np.load(os.path.join(folder, "sample", f)) for f in os.listdir(os.path.join(folder, "sample"))
                    if f.endswith(".npy")}


def test_a_hub_motion_adapter_samples_as_its_file_does(hub, capsys, monkeypatch):
    """End to end on the shipped miniature: the hub id of its motion module as a MotionAdapter repo samples
    the same video as the module's own file; the repo's two variants need --variant, which the error says."""
    common = ["--prompt", "a red circle", "--seed", "1", *SIZE]
    assert sample.main(["--motion-module", "org/mini-adapter", *common, "--out", "a"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: --motion-module org/mini-adapter: no plain weights, only the variants bf16, fp16 of "
                   "diffusion_pytorch_model: choose one (--variant)\n")  # the id as typed, not its snapshot
    assert sample.main(["--motion-module", "org/mini-adapter", "--variant", "int8", *common, "--out", "a"]) == 1
    assert capsys.readouterr().err == (
        "error: --motion-module org/mini-adapter: no variant 'int8' (--variant) and no plain weights; the variants "
        "there: bf16, fp16 of diffusion_pytorch_model: give --variant one of them\n")
    assert not os.path.exists("a")
    assert sample.main(["--motion-module", "org/mini-adapter", "--variant", "fp16", *common, "--out", "hub"]) == 0
    assert "warning" not in capsys.readouterr().err  # the adapter's fp16 weights were read (`validate`'s variants)
    assert sample.main(["--motion-module", motion_path(MINIATURE, "B"), *common, "--out", "file"]) == 0
    folder, by_id = _videos("hub")
    _, by_file = _videos("file")
    assert by_id.keys() == by_file.keys() and len(by_id) == 1
    for name, frames in by_file.items():
        np.testing.assert_array_equal(by_id[name], frames)
    with open(os.path.join(folder, "config.yaml"), encoding="utf-8") as f:
        (entry,) = yaml.safe_load(f)
    assert entry["motion_module"] == "org/mini-adapter" and entry["sample_options"]["variant"] == "fp16"
    jobs = stop_at_load(monkeypatch)  # the run's config.yaml finds the id again
    argv = [os.path.join(folder, "config.yaml"), "--out", "again"]
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv), argv)
    (job,) = jobs
    assert (job.model["motion_module"], job.model["variant"]) == ("org/mini-adapter", "fp16")


def test_lora_flags_take_hub_ids(hub, monkeypatch):
    """A LoRA repo (diffusers' pytorch_lora_weights.safetensors), a MotionLoRA repo (the hub's layout) and
    a domain adapter given by id are read, checked against the networks and named by the id."""
    jobs = stop_at_load(monkeypatch)
    argv = ["--lora", "org/checker:0.5", "--motion-lora", "org/zoom", "--domain-adapter", "org/checker",
            "--prompt", "a", *SIZE, "--out", "out"]
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv), argv)
    (job,) = jobs
    (lora,) = job.checked.loras
    assert (lora.path, lora.scale) == ("org/checker", 0.5)
    with safe_open(LORA, "np") as f:  # every module of the file (kohya keys: <module>.lora_down.weight, ...)
        modules = {k.split(".")[0] for k in f.keys()}
    assert lora.updates.keys() == {"unet"} and len(lora.updates["unet"]) == len(modules)
    assert [m.path for m in job.checked.motion_loras] == ["org/zoom"] and job.checked.domain_adapter.path == "org/checker"
    assert len(job.checked.motion_loras[0].updates["unet"]) == 1
    raw = job.entry.raw
    assert (raw["lora_model_path"], raw["adapter_lora_path"]) == (["org/checker"], "org/checker")
    assert raw["motion_module_lora_configs"] == [dict(path="org/zoom", alpha=1.0)]


def test_the_tokenizer_flag_takes_a_hub_id(hub, monkeypatch):
    """--tokenizer takes the id of a tokenizer repo (its files at the top, as openai/clip-vit-large-patch14)
    or of an SD repo (its tokenizer/), found as --base finds an id; the snapshot fetches tokenizer files only."""
    tokenizer = os.path.join(MINIATURE, "base", "tokenizer")
    clip = cache_repo(hub, "org/clip", lambda d: shutil.copytree(tokenizer, d))
    sd = cache_repo(hub, "org/sd", lambda d: shutil.copytree(tokenizer, os.path.join(d, "tokenizer")))
    jobs = stop_at_load(monkeypatch)
    for repo, folder in (("org/clip", clip), ("org/sd", sd / "tokenizer")):
        argv = ["--base", os.path.join(MINIATURE, "base"), "--tokenizer", repo, "--prompt", "a", *SIZE, "--out", "o"]
        with pytest.raises(Validated):
            sample.run(sample.build_parser().parse_args(argv), argv)
        assert jobs.pop().checked.tokenizer == str(folder)
    repo_files = ["vocab.json", "merges.txt", "tokenizer_config.json", "config.json", "model.safetensors",
                  "tokenizer/vocab.json", "tokenizer/merges.txt", "unet/diffusion_pytorch_model.safetensors",
                  "text_encoder/config.json", "model_index.json"]
    assert list(filter_repo_objects(repo_files, allow_patterns=HUB_PATTERNS["tokenizer"])) == [
        "vocab.json", "merges.txt", "tokenizer_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"]


@pytest.mark.parametrize("flags", [
    ["--base", "org/absent"], ["--dreambooth", "org/absent"], ["--motion-module", "org/absent"],
    ["--lora", "org/absent:0.5"], ["--motion-lora", "org/absent"], ["--domain-adapter", "org/absent"],
    ["--controlnet", "org/absent", "--control-video", "v.gif"],
    ["--sparsectrl", "org/absent", "--keyframes", "0", "--keyframe-images", "k.png"],
    ["--tokenizer", "org/absent", "--base", os.path.join(MINIATURE, "base")]])
def test_an_id_that_cannot_be_had_is_one_line_naming_the_flag(hub, capsys, monkeypatch, flags):
    jobs = stop_at_load(monkeypatch)
    assert sample.main([*flags, "--prompt", "a", *SIZE, "--out", "out"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flags[0]} org/absent: no such local file or folder, and hub id 'org/absent' "
                          f"(revision main) is not in the Hugging Face cache {hub} while HF_HUB_OFFLINE is set")
    assert err.count("\n") == 1 and not jobs and not os.path.exists("out")


MODEL_FLAGS = [["--base", "{}"], ["--dreambooth", "{}"], ["--motion-module", "{}"], ["--lora", "{}:0.5"],
               ["--motion-lora", "{}"], ["--domain-adapter", "{}"], ["--controlnet", "{}", "--control-video", "v.gif"],
               ["--sparsectrl", "{}", "--keyframes", "0", "--keyframe-images", "k.png"]]


@pytest.mark.parametrize("flags", MODEL_FLAGS)
@pytest.mark.parametrize("name", ["models/mm_sd_v15_v2.ckpt", "models/x.safetensors", "models/x.pth"])
def test_a_missing_weights_file_is_no_such_file_not_a_hub_id(hub, capsys, monkeypatch, flags, name):
    """A missing path written like 'owner/name' but ending in a weights file's suffix is no hub id."""
    jobs = stop_at_load(monkeypatch)
    assert sample.main([*(f.format(name) for f in flags), "--prompt", "a", *SIZE, "--out", "out"]) == 1
    assert capsys.readouterr().err == f"error: {flags[0]} {name}: not found\n"
    assert not jobs and not os.path.exists("out")


@pytest.mark.parametrize("flags", MODEL_FLAGS)
def test_a_model_flag_without_a_prompt_is_the_usage_error_first(hub, capsys, monkeypatch, flags):
    """Every model flag (control nets too) needs --prompt; that is said before its file is looked for."""
    jobs = stop_at_load(monkeypatch)
    assert sample.main([*(f.format("org/absent") for f in flags), *SIZE, "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --prompt: no prompt ({flags[0]} given: ") and err.count("\n") == 1, err
    assert not jobs and not os.path.exists("out")


def sample_config_with(key: str, value: str, capsys) -> tuple[str, str]:
    """Sample from sub/c.yaml whose one entry sets `key: value` (a path that is not there): (stderr, cwd)."""
    os.makedirs("sub")
    with open("sub/c.yaml", "w", encoding="utf-8") as f:
        f.write(f"- prompt: [a]\n  {key}: {value}\n")
    assert sample.main(["sub/c.yaml", "--base", os.path.join(MINIATURE, "base"), *SIZE, "--out", "out"]) == 1
    return capsys.readouterr().err, os.getcwd()


@pytest.mark.parametrize("key", ["motion_module", "dreambooth_path", "lora_model_path", "adapter_lora_path"])
def test_a_missing_weights_file_in_a_prompt_config_lists_where_it_looked(hub, capsys, key):
    err, cwd = sample_config_with(key, "models/mm_sd_v15_v2.ckpt", capsys)
    assert err.startswith(f"error: sub/c.yaml: entry 0: key '{key}': ") and err.rstrip().endswith(
        f"'models/mm_sd_v15_v2.ckpt' not found (looked at: {cwd}/models/mm_sd_v15_v2.ckpt, "
        f"{cwd}/sub/models/mm_sd_v15_v2.ckpt)"), err


def test_prompt_config_model_keys_take_hub_ids(hub, capsys, monkeypatch):
    """`motion_module`, `lora_model_path`, `motion_module_lora_configs`, `adapter_lora_path` and
    `controlnet_path` may be hub ids; `sample_options: {variant: ...}` chooses the variant."""
    jobs = stop_at_load(monkeypatch)
    config = "c.yaml"
    entry = textwrap.dedent("""\
        - prompt: [a cat]
          motion_module: org/mini-adapter
          lora_model_path: org/checker
          motion_module_lora_configs: [{path: org/zoom, alpha: 0.5}]
          adapter_lora_path: org/checker
          sample_options: {variant: fp16}
        """)
    with open(config, "w", encoding="utf-8") as f:
        f.write(entry)
    argv = [config, "--base", os.path.join(MINIATURE, "base"), *SIZE]
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv), argv)
    (job,) = jobs
    assert (job.model["motion_module"], job.model["loras"], job.model["motion_loras"]) == (
        "org/mini-adapter", [("org/checker", 0.8)], [("org/zoom", 0.5)])
    assert job.checked.motion.version == "v2" and job.model["variant"] == "fp16"
    with open(config, "a", encoding="utf-8") as f:
        f.write("  controlnet_path: org/absent\n  controlnet_images: [k.png]\n")
    open("k.png", "wb").close()  # the parser finds the key images; the encoder is refused first
    assert sample.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: c.yaml: entry 0: key 'controlnet_path': SparseCtrl encoder 'org/absent' not found "
                          f"(looked at: {os.getcwd()}/org/absent), and hub id 'org/absent' (revision main) is not in "
                          "the Hugging Face cache")
    assert err.count("\n") == 1


@pytest.mark.parametrize("key", ["motion_module", "dreambooth_path", "lora_model_path", "adapter_lora_path"])
def test_a_config_path_neither_there_nor_cached_says_both(hub, capsys, monkeypatch, key):
    """A model key's value written like a hub id, no such path beside the config or the cwd, nor in the
    cache: one line naming the config and key, where it looked and why the id cannot be had."""
    jobs = stop_at_load(monkeypatch)
    err, cwd = sample_config_with(key, "models/absent", capsys)
    assert err.startswith(f"error: sub/c.yaml: entry 0: key '{key}': ") and err.count("\n") == 1, err
    assert f"'models/absent' not found (looked at: {cwd}/models/absent, {cwd}/sub/models/absent), and hub id " \
           f"'models/absent' (revision main) is not in the Hugging Face cache {hub} while HF_HUB_OFFLINE is set. " \
           "Download it once with network access" in err, err
    assert not jobs and not os.path.exists("out")


def test_a_config_hub_id_the_loader_refuses_names_the_config_and_key(hub, capsys, monkeypatch):
    """A hub id from a prompt config that the loaders refuse (a repo of two variants, none chosen): the
    error names the config file, the entry and the key, not the flag that would take it."""
    jobs = stop_at_load(monkeypatch)
    with open("c.yaml", "w", encoding="utf-8") as f:
        f.write("- prompt: [a]\n  motion_module: org/mini-adapter\n")
    assert sample.main(["c.yaml", "--base", os.path.join(MINIATURE, "base"), *SIZE, "--out", "out"]) == 1
    assert capsys.readouterr().err == (
        "error: c.yaml: entry 0: motion_module org/mini-adapter: no plain weights, only the variants bf16, fp16 of "
        "diffusion_pytorch_model: choose one (--variant)\n")
    assert not jobs and not os.path.exists("out")


@pytest.mark.parametrize("entry, key", [("dreambooth_path: bad.safetensors", "dreambooth_path"),
                                        ("path: bad.safetensors", "path"),  # the first release's layout
                                        (f"base: bad.safetensors\n  path: {LORA}", "base")])
def test_an_entry_file_the_loader_refuses_names_the_key_the_entry_wrote(hub, capsys, entry, key):
    """Local files too: the loaders' errors about an entry's own files name the config, the entry and
    its key (the first release's `path`/`base` where the entry is in that layout)."""
    save_file({"x": np.ones((2, 2), np.float32)}, "bad.safetensors")
    with open("c.yaml", "w", encoding="utf-8") as f:
        f.write(f"- prompt: [a]\n  {entry}\n")
    assert sample.main(["c.yaml", "--base", os.path.join(MINIATURE, "base"), *SIZE, "--out", "out"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: c.yaml: entry 0: {key} {os.getcwd()}/bad.safetensors: not a Stable Diffusion 1.x "
                          "model") and err.count("\n") == 1, err
