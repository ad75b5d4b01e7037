"""Diffusers folders whose weights exist only as a variant (fp16), in every layout `save_pretrained` and
huggingface_hub write, are read through the one resolver (`convert.sources.weights_file`) by every
loader -- SD folders (UNet, VAE, text encoder), MotionAdapter and ControlNet folders -- equal to the
same weights in the plain layout, and described by `inspect`; the plain weights win where both are
there; several variants and no plain weights: every command that can meet such a folder offers the
--variant its error asks for. `inspect` and `motion` take hub ids as `convert base` does (a fake
Hugging Face cache, offline); one that cannot be found is one `error:` line."""
import copy
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, constants, save_torch_state_dict
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import filter_repo_objects

from animatediff_jax.checkpoint import load_params, read_metadata
from animatediff_jax.params import flatten
from convert.__main__ import main
from convert.base import load_base
from convert.controlnet import load_controlnet
from convert.io import CheckpointError
from convert.motion import load_motion_module
from animatediff_jax.hub_ids import is_hub_id
from convert.sources import parse_weights_name, weights_file
from tests.convert import controlnet_fixtures as F
from tests.convert.ldm_fixtures import build, save_folder
from tests.convert.motion_helpers import random_adapter
from tests.convert.test_lora_motion import motion_lora
from tests.utils import as_variants, cache_repo

SHARD = "200KB"  # the small UNet is ~1.6 MB in float16: several shards
COMPONENTS = ("unet", "vae", "text_encoder")
LAYOUTS = ("safetensors", "bin", "sharded", "hub-sharded")
MAIN, OTHER = "a" * 40, "b" * 40


def save_variant(model, folder: str, layout: str, stem: str = "diffusion_pytorch_model") -> str:
    """`model` saved in `folder` as the fp16 variant only, in `layout`: "safetensors" / "bin" whole
    (`<stem>.fp16.safetensors`), "sharded" (`save_pretrained`'s `<stem>.safetensors.index.fp16.json` +
    `<stem>.fp16-0000k-of-0000n.safetensors`) or "hub-sharded" (huggingface_hub's
    `save_torch_state_dict`: `<stem>.fp16.safetensors.index.json`). transformers saves safetensors
    only, so a CLIP `.bin` is written as `pytorch_model.fp16.bin` by huggingface_hub."""
    if layout in ("safetensors", "sharded") or (layout == "bin" and stem == "diffusion_pytorch_model"):
        model.save_pretrained(folder, variant="fp16", safe_serialization=layout != "bin",
                              **({"max_shard_size": SHARD} if layout == "sharded" else {}))
        return folder
    safe = layout != "bin"
    os.makedirs(folder, exist_ok=True)
    pattern = f"{stem if safe else 'pytorch_model'}.fp16{{suffix}}.{'safetensors' if safe else 'bin'}"
    save_torch_state_dict(model.state_dict(), folder, filename_pattern=pattern, safe_serialization=safe,
                          max_shard_size=SHARD if layout == "hub-sharded" else "5GB")
    (model.config.save_pretrained if stem == "model" else model.save_config)(folder)
    return folder


def save_variant_sd_folder(path: str, models, layout: str) -> str:
    for name, model in zip(COMPONENTS, models):
        save_variant(model, os.path.join(path, name), layout, "model" if name == "text_encoder" else
                     "diffusion_pytorch_model")
    return path


def weight_files(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f != "config.json")


def assert_same_tree(ours, ref):
    ours, ref = flatten(ours), flatten(ref)
    assert set(ours) == set(ref)
    for p, v in ref.items():
        np.testing.assert_array_equal(np.asarray(ours[p]), np.asarray(v), err_msg="/".join(p))


def assert_same_base(ours, ref):
    for name in COMPONENTS:
        assert_same_tree(getattr(ours, name), getattr(ref, name))
    assert (ours.unet_config, ours.vae_config, ours.text_config) == (ref.unet_config, ref.vae_config, ref.text_config)


def inspect_json(capsys, *args) -> list[dict]:
    capsys.readouterr()
    assert main(["inspect", "--json", *args]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """(float32 models, float16 models, the plain float16 folder, {layout: fp16-variant-only folder})."""
    root = tmp_path_factory.mktemp("variants")
    full = build("small")
    half = [copy.deepcopy(m).half() for m in full]
    plain = save_folder(str(root / "plain"), *half)
    return full, half, plain, {layout: save_variant_sd_folder(str(root / layout), half, layout) for layout in LAYOUTS}


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("name, parsed", [
    ("diffusion_pytorch_model.safetensors", ("diffusion_pytorch_model", None, "safetensors", False)),
    ("diffusion_pytorch_model.fp16.bin", ("diffusion_pytorch_model", "fp16", "bin", False)),
    ("model.safetensors.index.json", ("model", None, "safetensors", True)),
    ("model.safetensors.index.fp16.json", ("model", "fp16", "safetensors", True)),  # save_pretrained
    ("diffusion_pytorch_model.fp16.safetensors.index.json",  # huggingface_hub save_torch_state_dict
     ("diffusion_pytorch_model", "fp16", "safetensors", True)),
    ("diffusion_pytorch_model.bin.non_ema.index.json", ("diffusion_pytorch_model", "non_ema", "bin", True)),  # older
    ("diffusion_pytorch_model.fp16-00001-of-00004.safetensors", None),  # a shard
    ("diffusion_pytorch_model-00001-of-00004.safetensors", None),
    ("diffusion_pytorch_model.fp16.safetensors.index.bf16.json", None),  # two variants
    ("config.json", None), ("diffusion_pytorch_model.ckpt", None),
])
def test_weights_file_names(name, parsed):
    assert parse_weights_name(name) == parsed


# --------------------------------------------------------------------------- SD folders

@pytest.mark.parametrize("layout", LAYOUTS)
def test_variant_only_sd_folder_loads_like_the_plain_one(sd, layout):
    _, _, plain, folders = sd
    ours = load_base(folders[layout], progress=False)
    assert ours.source_format == f"diffusers-{'bin' if layout == 'bin' else 'safetensors'}"
    assert {np.asarray(v).dtype for v in flatten(ours.unet).values()} == {np.dtype(np.float16)}
    assert_same_base(ours, load_base(plain, progress=False))
    assert_same_base(load_base(folders[layout], variant="fp16", progress=False), ours)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inspect_describes_a_variant_only_sd_folder(sd, layout, capsys):
    folder = sd[3][layout]
    infos = inspect_json(capsys, folder)
    assert [i["kind"] for i in infos] == ["diffusers_unet", "diffusers_vae", "clip_text"]
    assert all(i["folder"] == "diffusers SD folder" and set(i["dtypes"]) == {"float16"} for i in infos)
    assert all(".fp16." in os.path.basename(i["file"]) for i in infos)
    sharded = layout.endswith("sharded")
    assert infos[0]["format"].startswith("safetensors, ") == sharded and infos[0]["format"].endswith(" shards") == sharded
    if layout == "bin":
        assert [os.path.basename(i["file"]) for i in infos] == [
            "diffusion_pytorch_model.fp16.bin", "diffusion_pytorch_model.fp16.bin", "pytorch_model.fp16.bin"]
        assert infos[0]["format"] == "pickle (bin)"


def test_plain_weights_win_over_a_variant_unless_it_is_asked_for(sd, tmp_path, capsys):
    full, half, plain, folders = sd
    both = save_folder(str(tmp_path / "both"), *full)
    for name in COMPONENTS:
        for f in weight_files(os.path.join(folders["safetensors"], name)):
            shutil.copy(os.path.join(folders["safetensors"], name, f), os.path.join(both, name, f))
    default = load_base(both, progress=False)
    assert {np.asarray(v).dtype for v in flatten(default.unet).values()} == {np.dtype(np.float32)}
    assert_same_base(load_base(both, variant="fp16", progress=False), load_base(plain, progress=False))
    assert [os.path.basename(i["file"]) for i in inspect_json(capsys, both)] == [
        "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors", "model.safetensors"]
    assert [os.path.basename(i["file"]) for i in inspect_json(capsys, "--variant", "fp16", both)] == [
        "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors"]
    # a variant the folder lacks falls back to the plain weights (as diffusers' pipelines do per component)
    assert_same_base(load_base(both, variant="bf16", progress=False), default)


@pytest.fixture(scope="module")
def plain_and_fp16(sd, tmp_path_factory):
    """{"sd" / "adapter" / "controlnet": (folder of plain weights, folder of fp16 weights only)} and a
    MotionLoRA file of the adapter."""
    root = tmp_path_factory.mktemp("plain_and_fp16")
    adapter, cn = random_adapter("v2").half(), F.controlnet("small").half()
    adapter.save_pretrained(str(root / "adapter"))
    torch.save(motion_lora(adapter, 1), root / "zoom.ckpt")
    return {"sd": (sd[2], sd[3]["safetensors"]),
            "adapter": (str(root / "adapter"), save_variant(adapter, str(root / "adapter-fp16"), "safetensors")),
            "controlnet": (F.save_folder(cn, str(root / "cn")), save_variant(cn, str(root / "cn-fp16"), "safetensors"))
            }, str(root / "zoom.ckpt")


@pytest.mark.parametrize("command, source, options", [
    ("base", "sd", ["out", "-q"]), ("inspect", "sd", []), ("controlnet", "controlnet", ["out.safetensors"]),
    ("motion", "adapter", ["out.safetensors", "-q"]),
    ("motion-lora", "adapter", ["out.safetensors", "--lora", "zoom", "-q"]),
    ("export-motion", "adapter", ["out", "--format", "diffusers", "-q"])])
def test_a_variant_no_input_read_holds_is_one_warning_line(plain_and_fp16, tmp_path, capsys, command, source,
                                                            options):
    """`--variant fp99` where every input has plain weights only: said once by each command that takes the
    flag, not silently ignored; a variant the input read holds (fp16) is not warned about."""
    folders, zoom = plain_and_fp16

    def argv(folder: str, variant: str, name: str) -> list[str]:
        return [command, folder, *(str(tmp_path / name) + o.removeprefix("out") if o.startswith("out") else
                                   zoom if o == "zoom" else o for o in options), "--variant", variant]

    capsys.readouterr()
    assert main(argv(folders[source][0], "fp99", "a")) == 0
    err = capsys.readouterr().err
    assert err == ("warning: --variant fp99: no input read holds weights of that variant; the plain weights "
                   "were used\n"), err
    assert main(argv(folders[source][1], "fp16", "b")) == 0
    assert "warning" not in capsys.readouterr().err


def test_inspect_warns_of_an_unused_variant_only_when_every_file_was_described(sd, tmp_path, capsys):
    capsys.readouterr()
    assert main(["inspect", sd[2], str(tmp_path / "absent"), "--variant", "fp99"]) == 1
    assert "warning" not in capsys.readouterr().err


def test_several_variants_and_no_plain_weights_must_be_chosen(sd, tmp_path, capsys):
    unet = shutil.copytree(os.path.join(sd[3]["safetensors"], "unet"), tmp_path / "unet")
    shutil.copy(unet / "diffusion_pytorch_model.fp16.safetensors", unet / "diffusion_pytorch_model.bf16.safetensors")
    with pytest.raises(CheckpointError, match=r"unet: no plain weights, only the variants bf16, fp16 of "
                                              r"diffusion_pytorch_model: choose one \(--variant\)$"):
        weights_file(str(unet))
    assert weights_file(str(unet), variant="bf16").endswith("diffusion_pytorch_model.bf16.safetensors")
    with pytest.raises(CheckpointError, match=r"unet: no variant 'ema' \(--variant\) and no plain weights; the variants "
                                              r"there: bf16, fp16 of diffusion_pytorch_model: give --variant one of them$"):
        weights_file(str(unet), variant="ema")
    (unet / "diffusion_pytorch_model.bf16.safetensors").unlink()
    (unet / "diffusion_pytorch_model.fp16.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"unet: no weights file: expected diffusion_pytorch_model\[.VARIANT\]"):
        weights_file(str(unet))


@pytest.fixture(scope="module")
def two_variants(sd, tmp_path_factory):
    """Folders holding the weights of two variants (fp16, bf16: the same bytes) and no plain weights:
    an SD folder, a MotionAdapter, a ControlNet."""
    root = tmp_path_factory.mktemp("two_variants")
    return {"sd": str(as_variants(shutil.copytree(sd[3]["safetensors"], root / "sd"), "fp16", "bf16")),
            "adapter": str(as_variants(save_variant(random_adapter("v2").half(), str(root / "adapter"), "safetensors"),
                                       "fp16", "bf16")),
            "controlnet": str(as_variants(save_variant(F.controlnet("small").half(), str(root / "cn"), "safetensors"),
                                          "fp16", "bf16"))}


@pytest.mark.parametrize("command, source, output", [
    ("base", "sd", ["out"]), ("inspect", "sd", []), ("controlnet", "controlnet", ["out.safetensors"]),
    ("motion", "adapter", ["out.safetensors"]), ("export-motion", "adapter", ["out", "--format", "diffusers"])])
def test_each_command_meeting_several_variants_offers_the_variant_it_asks_for(two_variants, tmp_path, capsys,
                                                                                command, source, output):
    argv = [command, two_variants[source], *(str(tmp_path / o) if o.startswith("out") else o for o in output)]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert re.search(r": no plain weights, only the variants bf16, fp16 of \S+: choose one \(--variant\)$", err.strip())
    assert main([*argv, "--variant", "int8"]) == 1  # a variant the folder lacks: said so, not "choose one"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r": no variant 'int8' \(--variant\) and no plain weights; the variants "
                                              r"there: bf16, fp16 of \S+: give --variant one of them$", err.strip()), err
    assert main([*argv, "--variant", "fp16"]) == 0, capsys.readouterr().err


# --------------------------------------------------------------------------- MotionAdapter, ControlNet folders

@pytest.mark.parametrize("layout", ["safetensors", "sharded"])
def test_variant_only_motion_adapter_folder(tmp_path, layout, capsys):
    adapter = random_adapter("v2").half()
    adapter.save_pretrained(str(tmp_path / "plain"))
    folder = save_variant(adapter, str(tmp_path / "fp16"), layout)
    assert all(".fp16" in f for f in weight_files(folder))
    ours, ref = load_motion_module(folder), load_motion_module(tmp_path / "plain")
    assert_same_tree(ours.params, ref.params)
    assert (ours.config, ours.version) == (ref.config, "v2")
    info = inspect_json(capsys, folder)[0]
    assert (info["folder"], info["kind"], info["version"]) == ("diffusers MotionAdapter folder", "motion_adapter", "v2")


def test_variant_only_controlnet_folder(tmp_path, capsys):
    model = F.controlnet("small").half()
    plain = F.save_folder(model, str(tmp_path / "plain"))
    folder = save_variant(model, str(tmp_path / "fp16"), "safetensors")
    ours, ref = load_controlnet(folder), load_controlnet(plain)
    assert ours.config == ref.config
    assert_same_tree(ours.params, ref.params)
    info = inspect_json(capsys, folder)[0]
    assert info["file"].endswith("diffusion_pytorch_model.fp16.safetensors")
    assert (info["folder"], info["kind"]) == ("diffusers ControlNetModel folder", "controlnet")


# --------------------------------------------------------------------------- hub ids

@pytest.fixture
def cached(sd, hub_cache):
    """The offline Hugging Face cache (`hub_cache`) holding org/tiny-sd (main: fp16 only; branch `plain`:
    plain weights) and org/tiny-adapter (a MotionAdapter)."""
    cache_repo(hub_cache, "org/tiny-sd", lambda d: shutil.copytree(sd[3]["safetensors"], d), commit=MAIN)
    cache_repo(hub_cache, "org/tiny-sd", lambda d: shutil.copytree(sd[2], d), "plain", OTHER)
    cache_repo(hub_cache, "org/tiny-adapter", lambda d: random_adapter("v3").save_pretrained(d), commit=MAIN)
    return hub_cache


def test_inspect_takes_hub_ids_from_the_cache(cached, capsys):
    infos = inspect_json(capsys, "org/tiny-sd", "org/tiny-adapter")
    snapshot = cached / "models--org--tiny-sd" / "snapshots" / MAIN
    assert [i["file"] for i in infos[:3]] == [
        str(snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors"),
        str(snapshot / "vae" / "diffusion_pytorch_model.fp16.safetensors"),
        str(snapshot / "text_encoder" / "model.fp16.safetensors")]
    assert [i["kind"] for i in infos] == ["diffusers_unet", "diffusers_vae", "clip_text", "motion_adapter"]
    assert (infos[3]["folder"], infos[3]["version"]) == ("diffusers MotionAdapter folder", "v3")
    plain = inspect_json(capsys, "--revision", "plain", "org/tiny-sd")
    assert [os.path.basename(os.path.dirname(os.path.dirname(i["file"]))) for i in plain] == [OTHER] * 3
    assert {os.path.basename(i["file"]) for i in plain} == {"diffusion_pytorch_model.safetensors", "model.safetensors"}
    assert main(["inspect", "org/tiny-adapter"]) == 0  # the text form too
    assert "  kind         motion_adapter\n" in capsys.readouterr().out


def test_absent_hub_id_is_one_error_line_and_the_others_are_described(cached, capsys):
    capsys.readouterr()
    assert main(["inspect", "--json", "org/absent", "org/tiny-adapter"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: org/absent: no such local file or folder, and hub id 'org/absent' (revision main) "
                          f"is not in the Hugging Face cache {cached} while HF_HUB_OFFLINE is set")
    absent, adapter = map(json.loads, out.splitlines())
    assert absent == {"file": "org/absent", "error": err[len("error: "):-1]} and adapter["kind"] == "motion_adapter"
    assert sorted(os.listdir(cached)) == ["models--org--tiny-adapter", "models--org--tiny-sd"]  # nothing written


@pytest.mark.parametrize("error, says", [
    (LocalEntryNotFoundError("Cannot find the requested files in the disk cache.\nSecond line."),
     "is not in the Hugging Face cache .* while the hub could not be reached"),
    (ValueError("Repository Not Found for url: https://huggingface.co/api/models/org/x.\nPlease make sure..."),
     r"fetching it as a hub id failed \(ValueError: Repository Not Found for url: .* Please make sure...\)$")])
def test_unreachable_or_failing_hub_is_one_error_line(monkeypatch, capsys, error, says):
    """The resolver's boundary: huggingface_hub's download raising as it does with no network (the
    cache then lacks the id) or for an unknown repository."""
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(HfApi, "model_info", fail)  # the listing first, failing as the download does
    monkeypatch.setattr("huggingface_hub.snapshot_download", fail)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    capsys.readouterr()
    assert main(["inspect", "org/x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: org/x: no such local file or folder, ")
    assert re.search(says, err.rstrip("\n")), err


def test_convert_motion_takes_hub_ids(cached, tmp_path, capsys):
    """`convert motion` (and the commands sharing its sources: `export-motion`) resolve a MotionAdapter
    repo's id as `convert base` resolves an SD model's; an absent one is one error line naming it."""
    snapshot = cached / "models--org--tiny-adapter" / "snapshots" / MAIN
    out = str(tmp_path / "mm.safetensors")
    assert main(["motion", "org/tiny-adapter", out, "-q"]) == 0, capsys.readouterr().err
    params, meta = load_params(out)
    assert_same_tree(params, load_motion_module(snapshot).params)
    assert read_metadata(out)["source"] == "motion:org/tiny-adapter"  # the id, not a cwd-relative path
    assert main(["export-motion", "org/tiny-adapter", str(tmp_path / "adapter"), "--format", "diffusers"]) == 0
    assert_same_tree(load_motion_module(tmp_path / "adapter").params, params)
    capsys.readouterr()
    assert main(["motion", "org/absent", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: org/absent: no such local file or folder, and hub id 'org/absent' (revision main) is not in the "
        f"Hugging Face cache {cached} while HF_HUB_OFFLINE is set"), err
    assert not (tmp_path / "x.safetensors").exists()


def test_inspect_describes_a_hub_motion_lora_repo(hub_cache, tmp_path, capsys):
    """The hub's diffusers MotionLoRA repos (guoyww/animatediff-motion-lora-*) hold one
    diffusion_pytorch_model.safetensors and no config.json: a LoRA folder, as `sample --motion-lora` reads it."""
    from safetensors.numpy import save_file
    key = "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora"
    rng = np.random.default_rng(0)
    cache_repo(hub_cache, "org/zoom", lambda d: (os.makedirs(d), save_file(
        {f"{key}.down.weight": rng.standard_normal((4, 32), np.float32),
         f"{key}.up.weight": rng.standard_normal((32, 4), np.float32)}, os.path.join(d, "diffusion_pytorch_model.safetensors"))))
    (info,) = inspect_json(capsys, "org/zoom")
    assert (info["folder"], info["kind"]) == ("LoRA folder", "motion_lora")


@pytest.mark.parametrize("command, output", [
    ("base", ["out"]), ("inspect", []), ("controlnet", ["out.safetensors"]), ("motion", ["out.safetensors"]),
    ("export-motion", ["out", "--format", "diffusers"])])
def test_a_variant_a_hub_repo_lacks_names_the_id_as_typed(two_variants, hub_cache, tmp_path, capsys, command, output):
    """A hub repo without the asked variant: the error names the id the user typed (not the snapshot
    folder it resolved to), says the variant is absent and lists the variants present."""
    source = {"base": "sd", "inspect": "sd", "controlnet": "controlnet"}.get(command, "adapter")
    cache_repo(hub_cache, "org/two", lambda d: shutil.copytree(two_variants[source], d))
    argv = [command, "org/two", *(str(tmp_path / o) if o.startswith("out") else o for o in output), "--variant", "int8"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    where = "org/two (unet/)" if source == "sd" else "org/two"
    assert err == (f"error: {where}: no variant 'int8' (--variant) and no plain weights; the variants there: "
                   "bf16, fp16 of diffusion_pytorch_model: give --variant one of them\n"), err


@pytest.fixture
def online_hub(two_variants, hub_cache, monkeypatch):
    """A reachable hub serving org/two (`two_variants["sd"]`: fp16 and bf16 weights): its listing, and a
    snapshot_download that copies the files the patterns match into the cache; returns its calls."""
    src = two_variants["sd"]
    listing = sorted(os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/")
                     for d, _, files in os.walk(src) for f in files)
    calls = []

    def model_info(self, repo_id, *, revision=None):
        calls.append(("list", repo_id, revision))
        return ModelInfo(id=repo_id, siblings=[{"rfilename": f} for f in listing])

    def snapshot_download(repo_id, *, revision=None, allow_patterns=None, ignore_patterns=None):
        files = list(filter_repo_objects(listing, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        calls.append(("download", repo_id, revision, files))
        snapshot = hub_cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / MAIN
        for f in files:
            os.makedirs(snapshot / os.path.dirname(f), exist_ok=True)
            shutil.copy(os.path.join(src, f), snapshot / f)
        return str(snapshot)
    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return listing, calls


def test_a_hub_id_downloads_the_asked_variants_weights_only(online_hub, tmp_path, capsys):
    """Online, a hub id's download is chosen from the repository's listing: its configs and the one
    weights file per folder the loader reads for --variant; a variant no folder can give is refused
    from the listing, before anything is downloaded, naming the variants there."""
    listing, calls = online_hub
    infos = inspect_json(capsys, "--variant", "fp16", "--revision", "v1", "org/two")
    ((_, _, _, files),) = [c for c in calls if c[0] == "download"]
    assert calls[0] == ("list", "org/two", "v1") and calls[1][:3] == ("download", "org/two", "v1")
    assert files == [f for f in listing if ".bf16." not in f]  # not bf16: every other file (configs, tokenizer)
    assert len(files) < len(listing) and any(".fp16." in f for f in files)
    assert [os.path.basename(i["file"]) for i in infos] == ["diffusion_pytorch_model.fp16.safetensors"] * 2 + [
        "model.fp16.safetensors"]
    calls.clear()
    assert main(["base", "org/two", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        "error: org/two (text_encoder/): no plain weights, only the variants bf16, fp16 of model / pytorch_model: "
        "choose one (--variant)\n")
    assert [c[0] for c in calls] == ["list"] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["mm_sd_v15_v2.ckpt", "x.safetensors", "x.bin", "x.pt", "x.PTH"])
def test_a_missing_weights_file_is_not_a_hub_id(name):
    assert not is_hub_id(f"models/{name}") and is_hub_id("guoyww/animatediff-motion-adapter-v1-5-2")


@pytest.mark.parametrize("command, args", [
    ("inspect", ["{m}"]), ("base", ["{m}", "out"]), ("motion", ["{m}", "out.safetensors"]),
    ("controlnet", ["{m}", "out.safetensors"]), ("export-motion", ["{m}", "out.ckpt"]),
    ("motion-lora", ["--lora", "{m}", "mm.ckpt", "out.safetensors"]), ("lora", ["--lora", "{m}", "base", "out"])])
def test_a_missing_weights_file_is_no_such_file(hub_cache, tmp_path, monkeypatch, capsys, command, args):
    """`models/mm_sd_v15_v2.ckpt` (one slash, like 'owner/name') is a missing file: one line saying so,
    no hub advice."""
    monkeypatch.chdir(tmp_path)
    missing = "models/mm_sd_v15_v2.ckpt"
    assert main([command, *(a.format(m=missing) for a in args)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing}: no such ") and err.count("\n") == 1 and "cache" not in err, err
