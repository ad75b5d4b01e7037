"""Faults of the training command a user met: an unwritable --workdir, a tfds source without the
[data] extra, a sample size the VAE cannot halve, the project's own Flax motion module as a start, a
MotionAdapter folder of several weight variants (training has no --variant to choose one), a run stopped
before its first step (it left empty folders), a preemption at a validation step (it sampled before
exiting), a .ckpt export that loses the module's heads/groups (said only once training had ended), two runs on
one workdir (they deleted each other's checkpoints), Ctrl-C (it discarded the steps since the last
checkpoint), a finished run re-run below its step (it exported again, after restoring)."""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from animatediff_jax import train
from animatediff_jax.checkpoint import save_params
from animatediff_jax.data.procedural_tfds import ProceduralConfig, ProceduralVideos
from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.models import attention as attention_lib
from animatediff_jax.params import flatten
from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
from animatediff_jax.training import config, metrics, trainer, workdir_lock
from animatediff_jax.training.config import Distributed, load_config
from tests.convert.motion_helpers import random_adapter
from tests.training import tiny
from tests.utils import as_variants, cache_repo


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("training started"))


@pytest.fixture
def overrides(tmp_path):
    return tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"))


@pytest.mark.parametrize("workdir, problem", [("/proc/w", "/proc is not writable"),
                                              ("some_file.ckpt", "is a file, not a folder")])
def test_an_unwritable_workdir_is_one_line_before_any_work(no_training, overrides, tmp_path, capsys,
                                                           workdir, problem):
    (tmp_path / "some_file.ckpt").write_text("x")
    workdir = workdir if workdir.startswith("/") else str(tmp_path / workdir)
    assert train.main(["--workdir", workdir, *overrides]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --workdir {workdir}: ") and problem in err and err.count("\n") == 1, err


def test_an_empty_workdir_is_refused_naming_the_flag(no_training, overrides, capsys):
    """`--workdir ''` would write checkpoints and exports into the current folder."""
    assert train.main(["--workdir", "", *overrides]) == 2
    assert capsys.readouterr().err == "error: --workdir: empty path\n"


def test_overrides_go_on_both_sides_of_workdir(overrides, tmp_path, monkeypatch):
    seen = {}

    def stop(cfg, workdir):
        seen.update(cfg=cfg, workdir=workdir)
        return {"preempted": True, "signal": signal.SIGTERM}
    monkeypatch.setattr(trainer, "train", stop)
    workdir = str(tmp_path / "w")
    assert train.main([*overrides, "--workdir", workdir, "max_train_steps=7", "global_seed=3"]) == 128 + signal.SIGTERM
    assert seen["workdir"] == workdir
    assert (seen["cfg"].max_train_steps, seen["cfg"].global_seed) == (7, 3)


def test_a_corrupt_tokenizer_is_one_line_before_training(no_training, tmp_path, capsys):
    tok = tiny.write_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "vocab.json").write_text("{")
    assert train.main(["--workdir", str(tmp_path / "w"), *tiny.overrides(tok)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: tokenizer_path {tok}/vocab.json: not a readable tokenizer file: ") and \
        err.count("\n") == 1, err


def test_model_inputs_take_hub_ids(hub_cache, tmp_path, capsys, monkeypatch):
    """README: every model input takes a hub id; the trainer's said `no such file or directory`. A cached
    id reaches training as its snapshot folder; an uncached one is one line naming the key."""
    mini = os.path.join(os.path.dirname(train.__file__), "assets", "miniature")
    snapshot = cache_repo(hub_cache, "org/mini", lambda d: shutil.copytree(os.path.join(mini, "base"), d))
    started = []
    monkeypatch.setattr(trainer, "train", lambda cfg, workdir: started.append(cfg) or pytest.fail("started"))
    with pytest.raises(pytest.fail.Exception):
        train.main(["--workdir", str(tmp_path / "w"), "pretrained_model_path=org/mini"])
    assert started[0].pretrained_model_path == str(snapshot)
    capsys.readouterr()
    for key in ("pretrained_model_path", "motion_module_path"):
        assert train.main(["--workdir", str(tmp_path / "w"), "pretrained_model_path=org/mini",
                           f"{key}=org/absent"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {key} org/absent: no such local file or folder, and hub id 'org/absent'") \
            and err.count("\n") == 1, err


def test_tfds_without_the_data_extra_is_named_before_training(no_training, overrides, tmp_path, capsys,
                                                              monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow_datasets" else real(name, *a))
    argv = ["--workdir", str(tmp_path / "w"), *overrides,
            f"train_data={json.dumps({'source': 'tfds', 'dataset_dir': str(tmp_path), 'sample_size': 32})}"]
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: tensorflow_datasets: not installed") and 'pip install -e ".[data]"' in err
    assert err.count("\n") == 1 and not (tmp_path / "w").exists()


@pytest.mark.parametrize("data, clip", [({"sample_size": 32, "sample_n_frames": 2}, "(2, 16, 16)"),
                                        ({"sample_size": 16, "sample_n_frames": 4}, "(2, 16, 16)")])
def test_a_dataset_of_other_clips_is_one_line_before_the_models_build(overrides, tmp_path, monkeypatch, capsys,
                                                                      data, clip):
    """Was found only at the first batch, after the models built and the mesh line."""
    builder = ProceduralVideos(config=ProceduralConfig(name="t", num_examples=2, frames=2, size=16),
                               data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare()
    monkeypatch.setattr(trainer, "build_models", lambda *a, **k: pytest.fail("models built"))
    workdir = tmp_path / "w"
    train_data = {"source": "tfds", "dataset_dir": str(builder.data_dir), **data}
    capsys.readouterr()  # the dataset build's progress bars
    assert train.main(["--workdir", str(workdir), *overrides, f"train_data={json.dumps(train_data)}",
                       "export_formats=[diffusers]"]) == 2
    out, err = capsys.readouterr()
    want = "(4, 16, 16)" if data["sample_n_frames"] == 4 else "(2, 32, 32)"
    assert err == (f"error: train_data.dataset_dir {builder.data_dir}: its clips are {clip} (frames, height, width); "
                   f"train_data.sample_n_frames / sample_size ask for {want}\n"), err
    assert "mesh" not in out and not workdir.exists()


def test_a_sample_size_the_vae_cannot_downsample_is_a_usage_error(tmp_path):
    tok = tiny.write_tokenizer(tmp_path / "tok")
    data = {"sample_n_frames": 4}
    with pytest.raises(UsageError, match=r"^train_data.sample_size: 33 pixels is not a multiple of 8"):
        load_config(None, tiny.overrides(tok, train_data={**data, "sample_size": 33}) + ["vae_config=null"])
    with pytest.raises(UsageError, match=r"^train_data.sample_size: 34 pixels is not a multiple of 4"):
        load_config(None, tiny.overrides(tok, train_data={**data, "sample_size": 34}))  # tiny's 3-level VAE


def test_an_unavailable_attention_kernel_is_said_when_the_models_are_built(overrides, monkeypatch, recwarn):
    """Before the step is traced (a step read from the compilation cache is not traced at all)."""
    if jax.default_backend() == "gpu":
        pytest.skip("cuDNN runs here")
    monkeypatch.setattr(attention_lib, "_warned", set())
    trainer.build_models(load_config(None, overrides + ["attention_impl=cudnn"]))
    said = [str(w.message) for w in recwarn if "unavailable" in str(w.message)]
    assert len(said) == 1 and "'cudnn' unavailable" in said[0] and "using 'chunked' instead" in said[0], said


def test_training_starts_from_the_projects_flax_motion_module(overrides, tmp_path):
    *_, motion, _, _, params = trainer.build_models(load_config(None, overrides))
    module = {k: np.asarray(v) + 1.0 for k, v in flatten(trainer.motion_subtree(params["unet"])).items()}
    path = str(tmp_path / "motion_module.safetensors")  # as the miniature build writes one (stages.save_motion)
    save_params(path, trainer.unflatten(module), config=motion, source="test", metadata={"motion": json.dumps(
        {"block_out_channels": [32, 64], "layers_per_block": 1, "version": "v2"})})
    *_, started = trainer.build_models(load_config(None, overrides + [f"motion_module_path={path}"]))
    got = flatten(trainer.motion_subtree(started["unet"]))
    assert got.keys() == module.keys()
    for k, v in module.items():
        np.testing.assert_array_equal(np.asarray(got[k]), v, err_msg=k)


def test_a_float16_motion_module_starts_training_in_float32_and_its_architecture_is_the_configs(overrides, tmp_path):
    """The shipped miniature's modules are float16 files: their weights trained in float16 (master weights and
    AdamW's state), and fine-tuning one gave NaN at step 2 at any learning rate, its NaN state saved."""
    *_, motion, _, _, params = trainer.build_models(load_config(None, overrides))
    module = trainer.unflatten({k: np.asarray(v) for k, v in flatten(trainer.motion_subtree(params["unet"])).items()})
    path = str(tmp_path / "motion_module.safetensors")
    save_params(path, module, config=motion, source="test", dtype="float16", metadata={"motion": json.dumps(
        {"block_out_channels": [32, 64], "layers_per_block": 1, "version": "v2"})})
    *_, started = trainer.build_models(load_config(None, overrides + [f"motion_module_path={path}"]))
    got = flatten(trainer.motion_subtree(started["unet"]))
    assert {np.asarray(v).dtype for v in got.values()} == {np.dtype(np.float32)}
    for k, v in flatten(module).items():
        np.testing.assert_array_equal(np.asarray(got[k]), v.astype(np.float16).astype(np.float32), err_msg=k)

    # The file's own heads and version against the config's: they ran as another network, silently, or failed
    # with "does not fit the UNet" naming no key.
    for extra, listed in (
            ['motion_module_kwargs={"num_attention_heads": 4, "norm_num_groups": 8, "max_seq_length": 8}',
             "num_attention_heads 2 (the config's: 4)"],
            ["motion_module_version=v1", "use_mid_block True (the config's: False), resnet_norm 'frame' (the "
                                         "config's: 'joint')"]):
        with pytest.raises(UsageError) as e:
            trainer.build_models(load_config(None, overrides + [f"motion_module_path={path}", extra]))
        assert str(e.value) == (f"motion_module_path {path}: a v2 motion module with {listed}; set "
                                f"motion_module_version (now {'v1' if 'v1' in extra else 'v2'}) and motion_module_kwargs "
                                "to the file's")


def test_a_folder_of_several_variants_says_what_training_reads(tmp_path):
    """The loaders' advice (--variant) names a flag training lacks: it says what training reads instead."""
    folder = tmp_path / "adapter"
    random_adapter("v2").save_pretrained(str(folder))
    as_variants(folder, "fp16", "bf16")
    with pytest.raises(InputError) as e, trainer.one_variant("motion_module_path"):  # as build_models reads it
        trainer.read_motion(str(folder))
    assert str(e.value) == (f"motion_module_path: {folder}: no plain weights, only the variants bf16, fp16 of "
                            "diffusion_pytorch_model: training reads a folder's plain weights or its only variant; "
                            "keep one variant's weight files there")


def test_a_run_stopped_before_its_first_step_leaves_no_folder(overrides, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) during start-up left `checkpoints/` and `tensorboard/` behind, both empty of results."""
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(metrics.MetricsLogger, "step", interrupted)
    workdir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(load_config(None, overrides + ["max_train_steps=2", "export_formats=[diffusers]"]),
                      str(workdir))
    assert not workdir.exists(), sorted(os.listdir(workdir))


def _sigterm_in_step_one(monkeypatch) -> None:
    """A real SIGTERM sent while step 1's metrics are logged (its handler runs before the loop asks)."""
    log_step = metrics.MetricsLogger.step

    def signalling(self, step, values):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return log_step(self, step, values)
    monkeypatch.setattr(metrics.MetricsLogger, "step", signalling)


def test_a_preempted_run_saves_and_exits_without_validating(overrides, tmp_path, monkeypatch, capsys):
    """SIGTERM at a step due for validation sampled the prompts (minutes under load) before exiting."""
    _sigterm_in_step_one(monkeypatch)
    monkeypatch.setattr(trainer, "validate", lambda *a, **k: pytest.fail("validated after SIGTERM"))
    workdir = tmp_path / "run"
    result = trainer.train(load_config(None, overrides + [
        "max_train_steps=2", "export_formats=[diffusers]", "validation_steps=1",
        'validation_data={"prompts": ["a b"], "num_inference_steps": 1}']), str(workdir))
    assert result["preempted"] and result["step"] == 1
    assert "SIGTERM: saved step 1, exiting" in capsys.readouterr().out
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1"]


def _sigterm_in_denoising_step(monkeypatch) -> list:
    """SIGTERM sent by validation sampling's first denoising step; returns the list of steps that ran."""
    ran = []
    step_function = AnimateDiffPipeline.step_function

    def signalling(self, *a, **k):
        step = step_function(self, *a, **k)

        def one(*args):
            ran.append(int(args[3]))
            if len(ran) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(*args)
        return one
    monkeypatch.setattr(AnimateDiffPipeline, "step_function", signalling)
    return ran


VALIDATE_AT = 'validation_data={"prompts": ["a b"], "num_inference_steps": 3, "video_length": 4}'


def test_sigterm_during_validation_sampling_stops_it_saves_and_exits(overrides, tmp_path, monkeypatch, capsys):
    """SIGTERM while validation sampled at step 1: the sampling finished (14 s), step 2 trained, then it saved."""
    ran = _sigterm_in_denoising_step(monkeypatch)
    workdir = tmp_path / "run"
    result = trainer.train(load_config(None, overrides + [
        "export_formats=[diffusers]", "validation_steps_tuple=[1]", VALIDATE_AT]), str(workdir))
    assert ran == [0]                                        # no denoising step after the signal
    assert result["preempted"] and result["signal"] == signal.SIGTERM and result["step"] == 1
    assert "SIGTERM: saved step 1, exiting" in capsys.readouterr().out
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1"]
    assert not (workdir / "samples").exists() and not (workdir / "motion_adapter").exists()


def test_sigterm_in_the_final_validation_exits_143_and_a_rerun_exports(overrides, tmp_path, monkeypatch, capsys):
    """SIGTERM during the final validation was ignored (sampled, exported, 'done', exit 0); a finished run
    whose exports are missing said 'nothing to train'; the re-run never rendered the final step's samples."""
    ran = _sigterm_in_denoising_step(monkeypatch)
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), *overrides, "export_formats=[diffusers]", "validation_steps_tuple=[3]",
            VALIDATE_AT]
    assert train.main(argv) == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert ran == [0] and "done" not in out
    assert ("SIGTERM: saved step 3 (the last; the same command writes the exports), exiting; its validation "
            "samples were not rendered: the same command renders them first") in out, out
    assert not (workdir / "samples").exists() and not (workdir / "motion_adapter").exists()
    written = (f"already finished: step 3 of 3 (max_train_steps); its exports (missing or from an earlier step) "
               f"written from that checkpoint: {workdir}/motion_adapter")
    rendered = (f"already finished: step 3 of 3 (max_train_steps); its validation samples (missing) rendered from "
                f"that checkpoint: {workdir}/samples/step-3; " + written.split("; ", 1)[1])
    assert train.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(ran) == 1 + 3 and out[-1] == rendered, out     # the 3 denoising steps, no signal this time
    assert any(line.startswith("validation: the samples of step 3 are missing") for line in out), out
    assert sorted(os.listdir(workdir / "samples" / "step-3")) == ["00.gif", "grid.gif", "prompts.json"]
    assert (workdir / "motion_adapter").is_dir() and (workdir / "config.json").is_file()
    monkeypatch.setattr(AnimateDiffPipeline, "step_function", lambda *a, **k: pytest.fail("sampled again"))
    assert json.loads((workdir / "exports.json").read_text()) == {"step": 3, "files": ["motion_adapter"]}
    with monkeypatch.context() as m:
        m.setattr(trainer, "setup_mesh", lambda *a: pytest.fail("built the mesh"))  # exports present now
        assert train.main(argv) == 0
    assert capsys.readouterr().out == "already finished: step 3 of 3 (max_train_steps); nothing to train\n"

    # Exports of an earlier step beside the last checkpoint: a finished run continued to a higher
    # max_train_steps and stopped at its last step. They were taken as current ('nothing to train') and
    # sampling used the earlier module; they are written again from the checkpoint.
    (workdir / "exports.json").write_text('{"step": 2, "files": ["motion_adapter"]}')
    assert train.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == written
    assert json.loads((workdir / "exports.json").read_text())["step"] == 3


def test_a_signal_at_the_last_step_never_says_done(overrides, tmp_path, monkeypatch, capsys):
    """max_train_steps=1 and SIGTERM in step 1: 'SIGTERM: saved step 1, exiting', then 'done: step 1', exit 0."""
    _sigterm_in_step_one(monkeypatch)
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides, "export_formats=[diffusers]",
                       "max_train_steps=1"]) == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert "SIGTERM: saved step 1 (the last" in out and "done" not in out, out
    assert not (workdir / "motion_adapter").exists()


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "interrupted")])
def test_a_signal_while_the_step_compiles_stops_before_step_one(overrides, tmp_path, monkeypatch, capsys, signum,
                                                                 name):
    """SIGTERM or Ctrl-C during the train step's compilation took effect only once it ended (Python runs
    handlers between bytecodes), then step 1 was trained and saved: a ~30 s preemption notice during a
    long compile was lost. Now the run stops before training, nothing saved, and exits 128 + signal."""
    check = trainer.check_step_memory

    def signalled_while_compiling(*args):
        os.kill(os.getpid(), signum)
        return check(*args)
    monkeypatch.setattr(trainer, "check_step_memory", signalled_while_compiling)
    monkeypatch.setattr(trainer, "MetricsLogger", lambda *a, **k: pytest.fail("a step was trained"))
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides, "export_formats=[diffusers]"]) == 128 + signum
    out, err = capsys.readouterr()
    assert f"{name} while compiling: no step trained, nothing saved; exiting" in out, out
    # One line, and true: a first Ctrl-C said 'saving the current step when it ends' before it.
    assert "saving" not in out + err and (out + err).count(name) == 1, out + err
    assert not (workdir / "checkpoints").exists() and not (workdir / "tensorboard").exists()


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "interrupted")])
def test_a_signal_while_the_first_batch_is_read_stops_before_compiling(overrides, tmp_path, monkeypatch, capsys,
                                                                       signum, name):
    """The same while the first batch was read (before the flag could save anything): it said 'saving the
    current step when it ends', compiled the step (minutes on a big model), then said 'nothing saved'."""
    read = trainer.HostInput.__call__

    def signalled_while_reading(self, step):
        os.kill(os.getpid(), signum)
        return read(self, step)
    monkeypatch.setattr(trainer.HostInput, "__call__", signalled_while_reading)
    monkeypatch.setattr(trainer, "check_step_memory", lambda *a: pytest.fail("compiled the step"))
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides, "export_formats=[diffusers]"]) == 128 + signum
    out, err = capsys.readouterr()
    assert f"{name} before compiling: no step trained, nothing saved; exiting" in out, out
    assert "saving" not in out + err and (out + err).count(name) == 1, out + err
    assert not (workdir / "checkpoints").exists()


def test_a_ckpt_export_that_loses_heads_and_groups_is_said_before_training(overrides, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.setattr(trainer, "open_source", lambda cfg: pytest.fail("the warning came after start-up"))
    workdir = str(tmp_path / "run")
    with pytest.raises(pytest.fail.Exception):
        trainer.train(load_config(None, overrides), workdir)  # tiny: 2 heads, 8 groups; both exports
    assert capsys.readouterr().err == (
        f"warning: export_formats: original: {workdir}/motion_module.ckpt: a PyTorch pickle stores neither heads "
        "nor GroupNorm groups (the original's loaders assume 8 and 32); this module has 2 and 8; the MotionAdapter "
        f"folder (export_formats diffusers: {workdir}/motion_adapter) keeps them: sample that, or sample the .ckpt "
        "with --motion-heads 2 --motion-norm-groups 8\n")
    only = load_config(None, overrides + ["export_formats=[original]"])
    assert "keeps them: add diffusers to export_formats and sample that, or" in trainer.export_warning(only, workdir)
    default_geometry = 'motion_module_kwargs={"num_attention_heads": 8, "norm_num_groups": 32, "max_seq_length": 8}'
    for quiet in (["export_formats=[diffusers]"], [default_geometry]):
        assert trainer.export_warning(load_config(None, overrides + quiet), workdir) is None


def test_validation_steps_all_above_max_train_steps_are_said_before_training(overrides, tmp_path, monkeypatch,
                                                                             capsys):
    """The miniature's validation_steps_tuple [300] with max_train_steps=100 silently wrote no samples."""
    monkeypatch.setattr(trainer, "open_source", lambda cfg: pytest.fail("the warning came after start-up"))
    prompts = ["export_formats=[diffusers]", 'validation_data={"prompts": ["a b"]}']
    with pytest.raises(pytest.fail.Exception):
        trainer.train(load_config(None, overrides + prompts + ["validation_steps_tuple=[300]"]), str(tmp_path / "r"))
    assert capsys.readouterr().err == (
        "warning: validation_steps_tuple [300]: no step up to max_train_steps 3, so this run writes no validation "
        "samples (validation_steps_tuple=[3] samples at its end)\n")
    late = load_config(None, overrides + prompts + ["validation_steps=5", "validation_steps_tuple=[4]"])
    assert config.validation_warning(late).startswith("warning: validation_steps 5 and validation_steps_tuple [4]: ")
    for due in (["validation_steps=3"], ["validation_steps_tuple=[300, 3]"], ["validation_steps=0"]):
        assert config.validation_warning(load_config(None, overrides + prompts + due)) is None


def test_a_second_run_on_a_workdir_in_use_is_refused_until_the_first_ends(overrides, tmp_path, monkeypatch, capsys):
    """A second run on the same workdir deleted the first one's unfinished checkpoints (orbax's tmp folders)."""
    workdir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WORKDIR, workdir], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(trainer, "_train", lambda *a, **k: pytest.fail("training started"))
        assert train.main(["--workdir", workdir, *overrides]) == 1
        err = capsys.readouterr().err
        assert err == (f"error: --workdir {workdir}: another training run (pid {holder.pid} on host "
                       f"{socket.gethostname()}) is using it\n")
    finally:
        holder.kill()  # a run that dies, however, frees its workdir
        holder.wait()
    monkeypatch.setattr(trainer, "_train", lambda *a, **k: {"step": 3, "start": 0, "loss": 0.5, "preempted": False})
    assert train.main(["--workdir", workdir, *overrides]) == 0
    assert "done: step 3" in capsys.readouterr().out


def test_a_second_single_host_run_is_refused_before_importing_jax(overrides, tmp_path):
    """The refusal came after JAX, the networks and the mesh: 9 s on a busy machine."""
    workdir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WORKDIR, workdir], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        probe = ("import sys\nfrom animatediff_jax import train\n"
                 "rc = train.main(sys.argv[1:])\nprint(rc, 'jax' in sys.modules)")
        r = subprocess.run([sys.executable, "-c", probe, "--workdir", workdir, *overrides],
                           capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert (r.stdout, r.stderr) == ("1 False\n", f"error: --workdir {workdir}: another training run (pid "
                                                  f"{holder.pid} on host {socket.gethostname()}) is using it\n")
    assert os.listdir(workdir) == [workdir_lock.LOCK_NAME]  # the check wrote nothing


@pytest.mark.parametrize("distributed, single", [({}, True), ({"initialize": "auto"}, False),
                                                 ({"coordinator_address": "h:1", "num_processes": 2,
                                                   "process_id": 0}, False)])
def test_only_a_single_host_config_checks_the_lock_early(distributed, single):
    """Other hosts of a multi-host run would find process 0's lock and refuse their own run."""
    assert Distributed(**distributed).single_host is single


HOLD_WORKDIR = """
import sys, time
from animatediff_jax.training import workdir_lock
with workdir_lock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def _ctrl_c_at_step_1(times: int):
    def step(self, step, values):
        if step == 1:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
    return step


def test_ctrl_c_saves_the_current_step_and_exits_130(overrides, tmp_path, monkeypatch, capsys):
    """Ctrl-C exited 130 with 'error: interrupted', discarding every step since the last checkpoint."""
    monkeypatch.setattr(metrics.MetricsLogger, "step", _ctrl_c_at_step_1(1))
    workdir = tmp_path / "run"
    try:
        code = train.main(["--workdir", str(workdir), *overrides, "export_formats=[diffusers]"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C aborted the run without saving")
    out, err = capsys.readouterr()
    assert code == 130 and "interrupted: saved step 1, exiting" in out, out + err
    assert "Ctrl-C again to abort" in err and "error:" not in err, err
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1"] and not (workdir / "motion_adapter").exists()


def test_a_second_ctrl_c_aborts_without_saving(overrides, tmp_path, monkeypatch):
    monkeypatch.setattr(metrics.MetricsLogger, "step", _ctrl_c_at_step_1(2))
    workdir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(load_config(None, overrides + ["export_formats=[diffusers]"]), str(workdir))
    assert not (workdir / "checkpoints").exists()


def test_a_finished_run_rerun_below_its_step_writes_nothing(overrides, tmp_path, monkeypatch, capsys):
    """max_train_steps below the saved step wrote config.json and motion_adapter/ again (after building the
    mesh and restoring the checkpoint) and said 'already finished: step 3 of 2'."""
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides, "export_formats=[diffusers]"]) == 0
    shutil.rmtree(workdir / "motion_adapter")
    os.remove(workdir / "config.json")
    before = sorted(os.listdir(workdir))  # the lock, checkpoints/, tensorboard/, exports.json
    capsys.readouterr()
    monkeypatch.setattr(trainer, "setup_mesh", lambda *a: pytest.fail("built the mesh"))
    assert train.main(["--workdir", str(workdir), *overrides, "export_formats=[diffusers]",
                       "max_train_steps=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["already past max_train_steps: the run's checkpoint is at step 3, above max_train_steps 2; "
                   "nothing trained or written (raise max_train_steps to continue it)"], out
    assert sorted(os.listdir(workdir)) == before


def test_a_batch_larger_than_the_data_is_said_before_the_models_build(overrides, tmp_path, monkeypatch, capsys):
    """train_data.num_clips=2 with batch 8 (or a 16-example dataset with batch 32) trained without a word."""
    class Built(Exception):
        pass

    def stop(*a, **k):
        raise Built
    monkeypatch.setattr(trainer, "build_models", stop)
    with pytest.raises(Built):
        trainer.train(load_config(None, overrides + ["train_data.num_clips=2", "train_batch_size=8"]),
                      str(tmp_path / "run"))
    assert capsys.readouterr().err.splitlines()[-1] == (
        "warning: train_batch_size 8 exceeds the 2 examples of train_data (source procedural, num_clips 2): every "
        "batch repeats examples")
    with pytest.raises(Built):
        trainer.train(load_config(None, overrides + ["train_data.num_clips=8", "train_batch_size=8"]),
                      str(tmp_path / "run2"))
    assert "exceeds" not in capsys.readouterr().err
