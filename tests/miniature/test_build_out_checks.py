"""miniature.build checks --out before any stage: writable, not any checkout's shipped weights, and
not a finished build's folder unless --stages continues it (or --motion-checkpoint-every resumes it)."""
import pytest

from animatediff_jax.errors import OutputError
from animatediff_jax.miniature import build, stages


@pytest.fixture(autouse=True)
def no_stage(monkeypatch):
    monkeypatch.setattr(stages, "STAGE_FUNCTIONS", {})  # a stage that starts fails with KeyError


def check(*argv):
    return build.checked_args(build.build_parser().parse_args(list(argv)))


def test_an_unwritable_out_is_one_line(capsys):
    assert build.main(["--budget", "smoke", "--out", "/proc/mb"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --out /proc/mb: /proc is not writable") and err.count("\n") == 1, err


def test_a_folder_holding_a_build_is_refused_without_stages(tmp_path, capsys):
    (tmp_path / "build.json").write_text("{}")
    (tmp_path / "motion_module_B.safetensors").write_text("weights")
    assert build.main(["--budget", "smoke", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path}: already holds a build (build.json)") and err.count("\n") == 1
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
    assert check("--out", str(shipped), "--stages", "motion", "--overwrite-shipped")[0] == ["motion"]
