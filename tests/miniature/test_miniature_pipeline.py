"""The miniature end to end at a toy budget: dataset -> VAE -> base -> DreamBooth / LoRA -> motion
module -> sampling through the ordinary loader -> evaluation table. Weights are meaningless here;
what is tested is that every stage runs, writes the files the next one reads, and that those files
load as a base folder, a DreamBooth checkpoint, a kohya LoRA and a motion module."""
import json
import os
import shutil
import time

import jax
import numpy as np
import pytest
from flax import serialization

from animatediff_jax import evaluate
from animatediff_jax.checkpoint import save_params
from animatediff_jax.errors import InputError
from animatediff_jax.miniature import direction_probe, lora, stages, trainer, world
from animatediff_jax.miniature.budget import BUDGETS, SEEDS, STAGES
from animatediff_jax.miniature.shipped import motion_path, paths
from animatediff_jax.params import flatten, unflatten
from animatediff_jax.training.lora import target_paths
from convert.lora import read_lora, read_motion_lora
from safetensors.numpy import load_file


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("miniature"))
    stages.build(out, "smoke", motion_checkpoint_every=1)
    return out


def test_every_stage_writes_its_files(smoke):
    p = paths(smoke)
    for key in ("vae", "text", "base", "lora"):
        assert os.path.isfile(p[key]), key
    for name in ("unet", "vae", "text_encoder"):
        assert os.path.isfile(os.path.join(p["dreambooth"], f"{name}.safetensors"))
    assert os.path.isfile(motion_path(smoke, "B"))
    assert os.path.isfile(motion_path(smoke, "B").replace(".safetensors", ".step1.safetensors"))
    with open(p["record"]) as f:
        record = json.load(f)
    assert set(STAGES) <= set(record) and all(record[s]["budget"] == "smoke" for s in STAGES)
    assert np.isfinite(record["base"]["loss"]) and np.isfinite(record["motion"]["schedules"]["B"]["loss"])
    assert os.path.isfile(p["motion_lora"]) and np.isfinite(record["motion_lora"]["loss"])
    assert record["text"]["trained"] and set(record["text"]["caption_retrieval"]) == {
        "caption", "domain", "color", "shape", "direction"}


def test_personalization_changed_the_base(smoke):
    nets, base = stages.networks(smoke)
    dreambooth, _ = stages.load(os.path.join(paths(smoke)["dreambooth"], "unet.safetensors"))
    changed = [k for k, v in flatten(dreambooth).items() if not np.array_equal(v, flatten(base["unet"])[k])]
    assert changed, "the DreamBooth fine-tune left every UNet weight unchanged"
    factors = read_lora(paths(smoke)["lora"], {"unet": base["unet"]})["unet"]
    assert len(factors) == sum(1 for k in flatten(base["unet"]) if lora.TARGETS.search("/".join(k)))
    layers = {"/".join(p[p.index("attn1" if "attn1" in p else "attn2" if "attn2" in p else "ff"):-1]) for p in factors}
    assert layers == {f"attn{a}/{q}" for a in (1, 2) for q in ("to_q", "to_k", "to_v", "to_out_0")} | {
        "ff/net_0/proj", "ff/net_2"}, layers
    assert any(np.abs(w.up).max() > 0 for w in factors.values()), "LoRA up factors never left zero"


def test_lora_fuse_matches_the_file_reader(smoke):
    """Training-time fusion (lora.fuse_factors) == what the sampler fuses from the kohya file."""
    from convert.lora import fuse
    _, base = stages.networks(smoke)
    factors = lora.init_factors(base["unet"], rank=2, seed=3)
    rng = np.random.default_rng(0)
    for f in factors["lora"].values():
        f["up"] = rng.standard_normal(f["up"].shape).astype(np.float32)
    path = os.path.join(smoke, "lora_check.safetensors")
    lora.save_kohya(path, factors, dtype=np.float32)
    ours = flatten(lora.fuse_factors({**base["unet"], **factors}))
    theirs = flatten(fuse(base["unet"], read_lora(path, {"unet": base["unet"]})["unet"]))
    assert max(float(np.abs(np.asarray(ours[k]) - theirs[k]).max()) for k in theirs) < 1e-5


def test_motion_lora_is_an_original_format_motion_lora_on_every_motion_attention(smoke):
    """The MotionLoRA stage's file: original MotionLoRA keys, read by the sampler's reader onto the
    build's motion module, factors on every motion-module attention projection, trained (up != 0)."""
    keys = list(load_file(paths(smoke)["motion_lora"]))
    assert keys and all(".processor.to_" in k and "_lora." in k and "motion_modules" in k for k in keys)
    module, _ = stages.load(paths(smoke)["motion"])
    factors = read_motion_lora(paths(smoke)["motion_lora"], module)
    _, base = stages.networks(smoke)
    unet = unflatten({**flatten(base["unet"]), **flatten(module)})
    assert set(factors) == set(target_paths(unet, "motion"))
    assert all(w.rank == BUDGETS["smoke"].motion_lora_rank for w in factors.values())
    assert any(np.abs(w.up).max() > 0 for w in factors.values()), "MotionLoRA up factors never left zero"


def test_moving_clips_all_move_the_given_way():
    video, captions = world.moving_clips(SEEDS["motion_lora_data"], "right", 3, 4)
    assert video.shape == (4, world.FRAMES, world.SIZE, world.SIZE, 3)
    assert all(c.endswith("moving right") for c in captions)
    for clip in video.astype(int):
        background = clip[0, 0, 0]  # plain: every pixel the object does not cover
        first, last = (np.argwhere(np.abs(frame - background).sum(-1) > 30)[:, 1].mean() for frame in clip[[0, -1]])
        assert last > first + 2, (first, last)  # the object's mean column moved right by pixels
    with pytest.raises(ValueError, match="unknown procedural direction"):
        world.moving_clips(0, "sideways", 0, 1)


def test_sampling_and_evaluation_run_on_the_built_files(smoke):
    # one row per kind (module / frame-wise / single images) and per personalization; the smoke build
    # trains schedule B only
    rows = [r for r in evaluate.ROWS if r.name in ("DreamBooth + module", "LoRA, no module", "LoRA images")
            or r.motion_lora]
    assert len(rows) == 4
    results = evaluate.evaluate(smoke, samples=1, steps=2, rows=rows)
    assert [r["name"] for r in results[4:]] == [r.name for r in rows]  # after the 4 reference rows
    for r in results:
        for key in evaluate.METRICS:
            assert r[key] is None or 0.0 <= r[key][1] <= r[key][0] <= r[key][2] <= 1.0  # mean inside its interval
    assert results[0]["motion"][0] == 1.0  # the dataset's own clips move as captioned
    table = evaluate.table(results)
    assert table.count("\n") == len(results) + 1 and "| LoRA images | none | 1 |" in table
    lr = BUDGETS["smoke"].learning_rates["motion"]
    assert f"motion B: {BUDGETS['smoke'].motion_steps} steps at lr {lr:g}" in evaluate.report(results, smoke, 2, 7.5, 1.0)


def test_direction_probe_runs_on_the_built_files(smoke):
    features, labels = direction_probe.pooled_features(smoke, clips=8, batch=4)
    assert len(labels) == 8 and set(labels) <= {"left", "right", "up", "down"}
    assert features and all(x.shape[0] == 8 and np.isfinite(x).all() for x in features.values())


def test_opposite_direction_swaps_only_the_direction_word():
    assert direction_probe.opposite_direction("sks, a red circle moving left on stripes background") == \
        "sks, a red circle moving right on stripes background"
    assert direction_probe.opposite_direction("an orange square moving up") == "an orange square moving down"
    assert direction_probe.opposite_direction("a red circle") == "a red circle"


def test_caption_dependence_denoises_with_each_caption(smoke):
    errors = direction_probe.caption_dependence(smoke, "B", clips=3, batch=2, timesteps=(961, 201))
    assert list(errors) == [961, 201]
    for row in errors.values():
        assert list(row) == list(direction_probe.CAPTIONS)
        values = np.array(list(row.values()))
        assert np.isfinite(values).all() and (values > 0).all()
        assert len(set(values.tolist())) == 3  # each caption reached the UNet: three different errors
    # the clean latents are recovered far better from little noise than from much
    assert errors[201]["caption"] < errors[961]["caption"]


# A training run stopped part-way continues from its resume file and ends exactly where an
# uninterrupted run ends (issue 15: the build may run across sessions).
class Stop(Exception):
    pass


def _fit(smoke, resume, stop_at=None, steps=4, lr=1e-3, starting=None):
    nets, params = stages.networks(smoke, BUDGETS["smoke"].motion)

    def batches(step):
        if step == stop_at:
            raise Stop
        return world.clips(SEEDS["motion_data"], step, 1)

    return trainer.fit(nets, stages.fresh_motion_params(nets.unet, nets.motion, 0),
                       {"unet": params["unet"], "vae": params["vae"], "text_encoder": params["text_encoder"]},
                       batches, stages.tokenizer(smoke), steps=steps, schedule="B", learning_rate=lr, seed=0,
                       name="motion", checkpoint_every=2, resume=resume, log_every=1, starting=starting)


def test_a_stopped_run_resumes_to_the_uninterrupted_result(smoke, tmp_path, capsys):
    whole, whole_loss, _ = _fit(smoke, str(tmp_path / "a.msgpack"))
    assert not os.path.exists(tmp_path / "a.msgpack")  # removed once training ends
    path = str(tmp_path / "b.msgpack")
    starts = []
    with pytest.raises(Stop):
        _fit(smoke, path, stop_at=3, starting=lambda: starts.append(1))
    assert os.path.exists(path) and starts == [1]
    with open(path, "rb") as f:
        before = serialization.msgpack_restore(f.read())["seconds"]
    start, starts = time.time(), []
    resumed, resumed_loss, seconds = _fit(smoke, path, starting=lambda: starts.append(1))
    assert "resuming at step 2" in capsys.readouterr().out and not starts  # stale step files: only at step 0
    assert resumed_loss == whole_loss
    assert 0 < before < seconds <= before + (time.time() - start)  # both parts counted (build.json)
    for key, value in flatten(whole).items():
        np.testing.assert_array_equal(flatten(resumed)[key], value)


def test_a_resume_file_of_other_settings_or_garbage_is_not_used(smoke, tmp_path, capsys):
    path = str(tmp_path / "c.msgpack")
    with pytest.raises(Stop):
        _fit(smoke, path, stop_at=3)
    _fit(smoke, path, lr=2e-3)
    assert "not resuming" in capsys.readouterr().out and not os.path.exists(path)
    with open(path, "wb") as f:
        f.write(b"\x00garbage")
    _fit(smoke, path)
    assert "not resuming" in capsys.readouterr().out


def test_a_finished_schedule_is_recorded_before_the_next_one_runs(smoke, tmp_path, monkeypatch):
    """The ablation's schedule A ran ~50 min, then its process was stopped during schedule B: build.json
    had no record of A (the motion stage recorded only at its end)."""
    out = tmp_path / "copy"
    shutil.copytree(smoke, out)
    real_fit, calls = stages.fit, []

    def fit_then_stop(*args, **kwargs):
        calls.append(kwargs["name"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process stopped during the second schedule
        return real_fit(*args, **kwargs)
    monkeypatch.setattr(stages, "fit", fit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        stages.build(str(out), "smoke", stages=("motion",), schedules=("A", "C"))
    assert calls == ["motion A", "motion C"]
    with open(paths(str(out))["record"]) as f:
        record = json.load(f)
    schedules = record["motion"]["schedules"]
    assert set(schedules) == {"A", "B"} and np.isfinite(schedules["A"]["loss"])
    assert schedules["A"]["steps"] == BUDGETS["smoke"].motion_steps and record["motion"]["budget"] == "smoke"
    assert schedules["B"] == json.load(open(paths(smoke)["record"]))["motion"]["schedules"]["B"]


def test_the_decoder_stage_trains_the_decoder_alone(smoke, tmp_path):
    """stage_decoder (through build, as the CLI runs it) rewrites base/vae.safetensors with a new decoder
    and the same encoder and scaling factor, so every latent the UNets were trained on stays what it
    was; the DreamBooth keeps the VAE it was trained with. On its own output it is refused (it would
    tune the tuned decoder); after the VAE stage it runs."""
    out = str(tmp_path / "copy")
    shutil.copytree(smoke, out)
    with pytest.raises(InputError, match="decoder was fine-tuned by the decoder stage already.*--stages vae,decoder"):
        stages.build(out, "smoke", ["decoder"])  # the smoke build's VAE is the stage's output
    stages.build(out, "smoke", ["vae"])
    before, before_cfg = stages.load(paths(out)["vae"])
    stages.build(out, "smoke", ["decoder"])
    after, after_cfg = stages.load(paths(out)["vae"])
    assert after_cfg == before_cfg
    before, after = flatten(before), flatten(after)
    assert before.keys() == after.keys()
    changed = {k[0] for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {"decoder", "post_quant_conv"}, changed
    dreambooth_vae, _ = stages.load(os.path.join(paths(out)["dreambooth"], "vae.safetensors"))
    assert all(np.array_equal(v, flatten(dreambooth_vae)[k]) for k, v in before.items())  # the VAE it was trained with


def test_stages_name_a_wrong_network_or_unreadable_file(smoke, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(smoke, out)
    shutil.copyfile(paths(out)["base"], paths(out)["vae"])  # a UNet where the VAE belongs
    with pytest.raises(InputError, match=r"vae.safetensors: holds the params of a UNetConfig, not of the vae"):
        stages.networks(out)
    vae, cfg = stages.load(paths(smoke)["vae"])
    save_params(paths(out)["vae"], jax.tree.map(lambda a: np.full_like(a, np.nan), vae), config=cfg)
    with pytest.raises(InputError, match=r"vae.safetensors: \d+ tensors hold NaN/Inf"):
        stages.networks(out)
    with open(os.path.join(paths(out)["tokenizer"], "vocab.json"), "w") as f:
        f.write('{"a": ')
    with pytest.raises(InputError, match=r"vocab.json: not a readable tokenizer file"):
        stages.tokenizer(out)
    for name in os.listdir(paths(out)["tokenizer"]):
        os.remove(os.path.join(paths(out)["tokenizer"], name))
    with pytest.raises(InputError, match=r"tokenizer: no tokenizer files"):
        stages.tokenizer(out)



def test_a_wrong_or_damaged_motion_module_is_one_line_before_any_work(smoke, tmp_path, capsys):
    """The MotionLoRA stage, the probe and evaluate name a LoRA, a UNet or a damaged file given as the
    motion module (or as the MotionLoRA) before they train, probe or sample."""
    from animatediff_jax.miniature import probe
    out = str(tmp_path / "copy")
    shutil.copytree(smoke, out)
    for source, problem in ((paths(out)["lora"], "holds no network config, so not the motion file"),
                            (paths(out)["base"], "holds the params of a UNetConfig, not of the motion")):
        shutil.copyfile(source, paths(out)["motion"])
        with pytest.raises(InputError, match=problem):
            stages.stage_motion_lora(out, BUDGETS["smoke"])
        assert probe.main(["--weights", out, "--clips", "16", "--module-clips", "1"]) == 1
        printed = capsys.readouterr()
        assert "probe accuracy" not in printed.out  # refused before the feature probe ran
        assert printed.err.startswith(f"error: {paths(out)['motion']}: {problem}") and printed.err.count("\n") == 1
    shutil.copyfile(motion_path(smoke, "B"), paths(out)["motion"])
    with open(paths(out)["motion_lora"], "r+b") as f:
        f.truncate(100)
    assert evaluate.main(["--weights", out, "--samples", "1", "--rows", evaluate.ROWS[-1].name]) == 1
    printed = capsys.readouterr()
    assert "[evaluate]" not in printed.err  # no scoring or sampling started
    assert printed.err.startswith(f"error: MotionLoRA {paths(out)['motion_lora']}: ") and printed.err.count("\n") == 1
    assert probe.main(["--weights", str(tmp_path / "nothing"), "--clips", "16"]) == 1
    assert capsys.readouterr().err.startswith(f"error: --weights {tmp_path / 'nothing'}: does not exist")
