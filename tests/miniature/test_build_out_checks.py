"""miniature.build checks --out before any stage: writable, not any checkout's shipped weights, and
not a finished build's folder unless --stages continues it (or --motion-checkpoint-every resumes it)."""
import os

import pytest

from animatediff_jax.errors import InputError, OutputError, UsageError
from animatediff_jax.miniature import build, stages


@pytest.fixture(autouse=True)
def no_stage(monkeypatch):
    monkeypatch.setattr(stages, "STAGE_FUNCTIONS", {})  # a stage that starts fails with KeyError


def with_base(folder):
    """`folder` holding the files the motion stage reads (tokenizer, VAE, text encoder, base UNet)."""
    os.makedirs(build.paths(str(folder))["tokenizer"], exist_ok=True)  # a folder
    for key in ("vae", "text", "base"):
        open(build.paths(str(folder))[key], "w").close()
    return folder


def check(*argv):
    return build.checked_args(build.build_parser().parse_args(list(argv)))


def test_an_unwritable_out_is_one_line(capsys):
    assert build.main(["--budget", "smoke", "--out", "/proc/mb"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --out /proc/mb: /proc is not writable") and err.count("\n") == 1, err


def test_a_folder_holding_a_build_is_refused_without_stages(tmp_path, capsys):
    (tmp_path / "build.json").write_text('{"tokenizer": {}, "vae": {}}')  # a build stopped after the VAE
    (with_base(tmp_path) / "motion_module_B.safetensors").write_text("weights")
    assert build.main(["--budget", "smoke", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path}: already holds a build (build.json records tokenizer,vae); "
                          "pass --stages text,base,dreambooth,decoder,lora,motion,motion_lora to continue it") and err.count("\n") == 1
    assert (tmp_path / "motion_module_B.safetensors").read_text() == "weights"
    assert check("--out", str(tmp_path), "--stages", "motion")[0] == ["motion"]


def test_a_stopped_build_resumes_with_motion_checkpoints(tmp_path):
    (tmp_path / "build.json").write_text("{}")
    (tmp_path / "motion_module_B.resume.msgpack").write_bytes(b"state")
    assert check("--out", str(tmp_path), "--motion-checkpoint-every", "5")[0] == list(build.STAGES)
    with pytest.raises(OutputError, match="already holds a build"):
        check("--out", str(tmp_path))


def test_the_shipped_folder_of_any_checkout_needs_overwrite_shipped(tmp_path):
    shipped = tmp_path / "checkout" / "animatediff_jax" / "assets" / "miniature"
    shipped.mkdir(parents=True)
    with pytest.raises(OutputError, match=r"shipped weights; pass --overwrite-shipped"):
        check("--out", str(shipped), "--stages", "motion")
    assert check("--out", str(with_base(shipped)), "--stages", "motion", "--overwrite-shipped")[0] == ["motion"]


@pytest.mark.parametrize("argv, line", [
    (["--out", ""], "error: --out: empty path"),
    (["--stages", ""], "error: --stages '': give comma-separated names, each one of " + ",".join(build.STAGES)),
    (["--stages", ","], "error: --stages ',': give comma-separated names, each one of " + ",".join(build.STAGES)),
    (["--stages", "vae,vae"], "error: --stages 'vae,vae': names a value twice"),
    (["--schedules", "B,B"], "error: --schedules 'B,B': names a value twice"),
    (["--schedules", "Z"], "error: --schedules 'Z': give comma-separated names, each one of A,B,C"),
])
def test_a_bad_flag_is_one_line(tmp_path, capsys, argv, line):
    assert build.main(["--budget", "smoke", "--out", str(tmp_path / "new"), *argv]) in (1, 2)
    assert capsys.readouterr().err == line + "\n"
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("argv, line", [
    (["--schedules", "Z"], "error: --schedules 'Z': give comma-separated names, each one of A,B,C"),
    (["--motion-lr", "nan"], "error: --motion-lr: must be a finite number, got nan"),
    (["--motion-lr", "0"], "error: --motion-lr: must be in (0, inf), got 0"),
])
def test_flags_are_checked_before_the_out_folder(tmp_path, capsys, argv, line):
    (tmp_path / "build.json").write_text("{}")
    assert build.main(["--budget", "smoke", "--out", str(tmp_path), *argv]) in (1, 2)
    assert capsys.readouterr().err == line + "\n"


def test_a_stage_without_its_inputs_is_refused_leaving_nothing(tmp_path, capsys):
    out = tmp_path / "fresh"
    assert build.main(["--budget", "smoke", "--out", str(out), "--stages", "motion"]) == 1
    files = ", ".join(build.paths(str(out))[key] for key in ("tokenizer", "vae", "text", "base"))
    assert capsys.readouterr().err == (f"error: --stages motion: needs {files}, which the tokenizer, vae, text, base "
                                       "stages write; add them to --stages or choose the --out of a build that has "
                                       "them\n")
    assert not out.exists()
    with_base(out)
    os.remove(build.paths(str(out))["text"])
    with pytest.raises(InputError, match=r"text_encoder.safetensors, which the text stage writes; add it to --stages"):
        check("--out", str(out), "--stages", "lora,motion")
    assert check("--out", str(out), "--stages", "motion,base,text,vae,tokenizer")[0] == [
        "motion", "base", "text", "vae", "tokenizer"]  # each input written by a chosen stage that runs first
    with pytest.raises(InputError, match=r"motion_module_B.safetensors, which the motion stage writes; add it"):
        check("--out", str(out), "--stages", "text,motion_lora")  # the MotionLoRA needs the module
    assert check("--out", str(out), "--stages", "text,motion,motion_lora")[0] == ["text", "motion", "motion_lora"]


def test_a_resumed_stage_says_which_seconds_were_this_run():
    assert stages.seconds_text(35.2, 35.0) == "35s"
    assert stages.seconds_text(63.0, 35.0) == "63s (35s in this run, the rest in the earlier runs it resumed)"


def test_a_motion_run_starting_at_step_0_removes_stale_step_files(tmp_path, monkeypatch, capsys):
    for name in ("motion_module_B.step25.safetensors", "motion_module_B.step50.safetensors",
                 "motion_module_A.step25.safetensors", "motion_module_B.safetensors"):
        (tmp_path / name).write_text("old")
    seen = []

    def fit(*args, starting=None, **kwargs):
        seen.append(sorted(os.listdir(tmp_path)))  # starting() is fit's to call (when not resuming)
        starting()
        return {}, 0.5, 1.0

    monkeypatch.setattr(stages, "networks", lambda out, motion: (stages.Networks(None, motion, None, None), {
        "unet": {}, "vae": {}, "text_encoder": {}}))
    monkeypatch.setattr(stages, "fresh_motion_params", lambda *args: {})
    monkeypatch.setattr(stages, "tokenizer", lambda out: None)
    monkeypatch.setattr(stages, "save_motion", lambda path, *args: open(path, "w").close())
    monkeypatch.setattr(stages, "fit", fit)
    stages.stage_motion(str(tmp_path), build.BUDGETS["smoke"], checkpoint_every=10)
    assert sorted(os.listdir(tmp_path)) == ["build.json", "motion_module_A.step25.safetensors",
                                            "motion_module_B.safetensors"]  # build.json: B's record, once trained
    assert ("motion B: starting at step 0; removed the step files of an earlier run: "
            "motion_module_B.step25.safetensors, motion_module_B.step50.safetensors") in capsys.readouterr().out


def test_a_stage_run_replaces_its_old_entry_in_build_json_keeping_other_motion_schedules(tmp_path):
    """A key of the old motion entry (one a person added: which base a kept module learned on) outlived the
    module it described when the motion stage ran again."""
    import json
    old = {"base": {"steps": 4000}, "motion": {"batch": 2, "seconds": 5.0, "against_base": "an earlier base",
                                               "schedules": {"A": {"steps": 10}, "B": {"steps": 10}}}}
    (tmp_path / "build.json").write_text(json.dumps(old))
    record = stages.record_stage(str(tmp_path), "motion", {"batch": 4, "seconds": 9.0, "schedules": {"B": {"steps": 20}}})
    assert record == json.loads((tmp_path / "build.json").read_text())
    assert record["base"] == {"steps": 4000}
    assert record["motion"] == {"batch": 4, "seconds": 9.0, "schedules": {"A": {"steps": 10}, "B": {"steps": 20}}}


def test_motion_flags_without_the_motion_stage_are_refused(tmp_path):
    with pytest.raises(UsageError, match="--schedules, --motion-steps: for the motion stage, which --stages decoder"):
        check("--out", str(with_base(tmp_path)), "--stages", "decoder", "--schedules", "A", "--motion-steps", "5")


def test_every_folder_a_stage_writes_is_checked_before_it_trains(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(build, "check_writable_parent", lambda folder, flag="--out": asked.append(folder))
    out = str(with_base(tmp_path))
    check("--out", out, "--stages", "decoder")
    assert set(asked) == {out, os.path.join(out, "base")}  # --out, then the stage's
    asked.clear()
    check("--out", out, "--stages", "lora,motion")
    assert set(asked) == {out}


def test_a_folder_where_a_stage_writes_its_file_is_refused_before_training(tmp_path):
    out = with_base(tmp_path)
    (out / "motion_module_B.safetensors").write_text("weights")
    os.makedirs(build.paths(str(out))["motion_lora"])
    with pytest.raises(OutputError, match=r"motion_lora_right.safetensors: is a folder where the motion_lora file"):
        check("--out", str(out), "--stages", "motion_lora")
