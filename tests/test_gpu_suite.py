"""benchmarks/gpu.sh --smoke: the one-shot GPU suite's code path runs end to end on CPU with tiny configs.

Six fresh JAX/torch processes: a few minutes on a quiet 2-core machine (the train step's compile dominates).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_suite_smoke_runs_every_part(tmp_path):
    out = tmp_path / "suite.json"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "--smoke", "--no-install",
                           "--kernels", "chunked", "--parts", "ours", "diffusers", "train", "remat",
                           "--part-timeout", "1500", "--json", str(out),
                           "--log", str(tmp_path / "parts.log")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "failed" not in done.stdout, done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["impl"] for r in rows] == ["ours chunked", "diffusers SDPA", "ours train step, batch 1",
                                         "ours train step, batch 1, remat"]
    for r in rows:
        assert r["first_call_s"] > 0 and r.get("s_per_video", r.get("step_s")) > 0, r
    assert rows[0]["tflop"] > 0 and rows[2]["clips_s"] > 0 and rows[3]["clips_s"] > 0
    assert rows[2]["tflop"] == rows[3]["tflop"] > 0  # model FLOPs: remat's recomputation is not counted
    assert "| sample | ours chunked | float32 |" in done.stdout and "| train | ours train step, batch 1 |" in done.stdout
    log = (tmp_path / "parts.log").read_text()
    assert [line for line in log.splitlines() if line.startswith("=====")] == [
        f"===== part {p}: ok" for p in ("peak", "ours chunked", "diffusers", "train off 1", "train on 1", "flops 1")]


def test_parts_selects_what_runs_and_profile_writes_a_summary(tmp_path):  # remat is not a default part
    out, prof = tmp_path / "suite.json", tmp_path / "prof"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--smoke", "--parts", "train",
                           "--train-batch", "1", "2", "--profile", str(prof), "--part-timeout", "1500",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["impl"] for r in rows] == ["ours train step, batch 1", "ours train step, batch 2"], rows
    assert 1.9 < rows[1]["tflop"] / rows[0]["tflop"] < 2.1  # FLOPs counted at each batch
    assert sorted(os.listdir(prof)) == ["train_step.xplane.pb.gz", "train_step_hlo.txt.gz", "train_step_profile.md"]
    summary = (prof / "train_step_profile.md").read_text()
    assert "| HLO instruction kind | ms | kernels | share |" in summary and "Kernel time in all:" in summary


def test_a_part_past_the_suite_budget_is_skipped_not_started(tmp_path):
    sys.path.insert(0, ROOT)
    from benchmarks.gpu_suite import run_part
    row = run_part(["ours", "chunked"], True, 5.0, str(tmp_path / "log"))
    assert row == dict(part="ours", impl="ours chunked", error="skipped: the suite's --budget is spent")
