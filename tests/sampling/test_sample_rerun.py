"""A run's config.yaml reproduces its videos bit for bit: seeds actually used, every LoRA, the sampler,
clip skip and every other setting are recorded, and re-running the file needs no flags."""
import os

import numpy as np
import pytest
import yaml

from animatediff_jax import sample
from tests.sampling import tiny_models as tm


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerun")
    tm.write_base_folder(str(root / "base"))
    tm.write_adapter_folder(str(root / "adapter"))
    tm.write_original_motion_module(str(root / "adapter"), str(root / "mm.safetensors"))
    tm.write_kohya_lora(str(root / "a.safetensors"), seed=21)
    tm.write_kohya_lora(str(root / "b.safetensors"), rank=3, seed=22)
    return root


def _frames(out):
    (run,) = os.listdir(out)
    folder = out / run / "sample"
    return folder, {f: np.load(folder / f) for f in sorted(os.listdir(folder)) if f.endswith(".npy")}


def _assert_replays(config, out, videos):
    """Running the recorded `config` (into `out`) gives `videos` bit for bit."""
    assert sample.main([str(config), "--no-progress", "--save-npy", "--out", str(out)]) == 0
    _, replayed = _frames(out)
    assert list(replayed) == list(videos)
    for name in videos:
        np.testing.assert_array_equal(replayed[name], videos[name])


def test_rerunning_config_yaml_reproduces_the_videos_bit_for_bit(files, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    monkeypatch.chdir(files)  # relative paths on the command line; the re-run happens elsewhere
    first = tmp_path / "first"
    assert sample.main(["--base", "base", "--motion-module", "mm.safetensors", "--lora", "a.safetensors:0.7",
                        "--lora", "b.safetensors:0.5", "--scheduler", "euler_ancestral", "--clip-skip", "1",
                        "--prompt", "a cat", "--prompt", "a dog", "--seed", "-1", "--negative-prompt", "blurry",
                        "--steps", "2", "--guidance-scale", "6", "--W", "32", "--H", "32", "--L", "4",
                        "--no-progress", "--save-npy", "--out", str(first)]) == 0
    folder, videos = _frames(first)
    (entry,) = yaml.safe_load((folder.parent / "config.yaml").read_text())
    assert entry["seed"] == entry["random_seed"] and all(s >= 0 for s in entry["seed"]) and len(entry["seed"]) == 2
    assert entry["clip_skip"] == 1
    assert entry["lora_model_path"] == [str(files / "a.safetensors"), str(files / "b.safetensors")]
    assert (entry["lora_alpha"], entry["lora_alpha_rule"]) == ([0.7, 0.5], "kohya")  # every --lora, the flags' rule
    opts = entry["sample_options"]
    assert (opts["scheduler"], opts["base"], opts["dtype"]) == ("euler_ancestral", str(files / "base"), "float32")

    monkeypatch.chdir(tmp_path)
    _assert_replays(folder.parent / "config.yaml", tmp_path / "again", videos)

    # the recorded clip skip is live: overriding it changes the videos
    other = tmp_path / "other"
    assert sample.main([str(folder.parent / "config.yaml"), "--clip-skip", "0", "--no-progress", "--save-npy",
                        "--out", str(other)]) == 0
    _, changed = _frames(other)
    assert all(np.abs(changed[n] - videos[n]).max() > 1e-4 for n in videos)


def test_a_config_naming_files_relative_to_itself_records_them_absolute(files, tmp_path, monkeypatch):
    """Paths relative to the prompt config's own folder (or the cwd) are recorded absolute: the run's
    config.yaml re-runs from any folder. A value used by several entries (the prompts of a first-release
    entry listing two motion modules) is written out each time, not as a YAML anchor and alias."""
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    config = tmp_path / "configs" / "rel.yaml"
    config.parent.mkdir()
    mm = os.path.relpath(files / "mm.safetensors", config.parent)
    config.write_text(yaml.safe_dump({"Run": {
        "motion_module": [mm, mm], "lora_model_path": os.path.relpath(files / "a.safetensors", config.parent),
        "lora_alpha": 0.7, "prompt": ["a cat"], "seed": [3], "steps": 2, "W": 32, "H": 32, "L": 4}}))
    monkeypatch.chdir(tmp_path)  # neither the config's folder nor the files'
    first = tmp_path / "first"
    assert sample.main([str(config), "--base", str(files / "base"), "--no-progress", "--save-npy",
                        "--out", str(first)]) == 0
    folder, videos = _frames(first)
    text = (folder.parent / "config.yaml").read_text()
    assert "&id" not in text and "*id" not in text, text
    entries = yaml.safe_load(text)
    assert [e["motion_module"] for e in entries] == [str(files / "mm.safetensors")] * 2
    assert all(e["lora_model_path"] == str(files / "a.safetensors") for e in entries)

    monkeypatch.chdir(files)
    _assert_replays(folder.parent / "config.yaml", tmp_path / "again", videos)
