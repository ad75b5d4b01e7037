"""The sampler's memory estimate (`animatediff_jax.memory_estimate`): it scales as the buffers it
counts do, and a run it says cannot fit is refused in one line before any model loads, unless
--allow-over-memory."""
import math
import os
import time

import jax
import numpy as np
import pytest

from animatediff_jax import loading, memory_estimate as mem, sample
from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from animatediff_jax.models.configs import MOTION_V2, SD15_TEXT, SD15_UNET, SD15_VAE
from animatediff_jax.sampling.context_windows import ContextOptions
from animatediff_jax.param_shapes import flax_param_shapes
from tests.sampling.stop_at_load import Validated, stop_at_load
from tests.sampling.tiny_models import write_base_folder

CPU, GPU = mem.Platform("cpu"), mem.Platform("gpu", "9.0")
GIB = mem.GIB
UNET_PARAMETERS = int(4.89 * GIB / 4)  # SD1.5 UNet + motion module v2: 4.89 GiB in float32 (BENCHMARKS.md)
SD15 = mem.Models(SD15_UNET, MOTION_V2, SD15_VAE, SD15_TEXT, parameters=int(5.66 * GIB / 4))  # + VAE, text
RUN = dict(batch=1, cfg=True, frames=16, height=512, width=512, context=None, decode_chunk=4, dtype="float32",
           attention="chunked", platform=CPU, videos=1)


def estimate(**changes) -> mem.Estimate:
    return mem.estimate(SD15, **{**RUN, **changes})


def test_every_buffer_grows_with_the_sizes_it_depends_on():
    base = estimate()
    for changes in (dict(width=1024), dict(height=1024), dict(frames=32), dict(batch=2), dict(videos=2),
                    dict(decode_chunk=8)):
        bigger = estimate(**changes)
        assert bigger.device + bigger.host > base.device + base.host, changes
    assert estimate(frames=32).unet == 2 * base.unet  # activations: linear in the frames a call sees
    assert estimate(width=1024, height=1024).unet == 4 * base.unet  # and in the pixels (chunked: no scores)
    assert estimate(cfg=False).unet == base.unet // 2  # classifier-free guidance doubles the UNet's batch
    assert estimate(decode_chunk=8).decode > base.decode and estimate(frames=32).videos == 2 * base.videos
    assert estimate(dtype="bfloat16", platform=GPU).weights * 2 == estimate(platform=GPU).weights
    assert estimate().weights > estimate(platform=GPU).weights  # XLA:CPU's copies of the weights


def test_sd15_agrees_with_xlas_own_analysis():
    """BENCHMARKS.md (XLA:CPU memory_analysis, SD1.5 + v2, 16x512², CFG, float32): the step's temporaries
    are 5.51 GiB with chunked attention (1.72 of them copies of the UNet's weights), the decode's in
    chunks of 4 3.55 GiB; xla attention materialises (B·F, heads, tokens, tokens) scores."""
    copies = mem.weight_bytes(UNET_PARAMETERS, 4, CPU) - 4 * UNET_PARAMETERS
    assert 0.8 < (estimate().unet + copies) / (5.51 * GIB) < 1.25
    assert 0.8 < estimate().decode / (3.55 * GIB) < 1.25
    assert estimate(attention="xla").unet_scores == 2 * 16 * 8 * 4096**2 * (4 + 4)  # float32 scores + softmax


def test_flash_kernels_hold_no_scores_and_context_windows_cap_the_step():
    gpu = estimate(dtype="bfloat16", platform=GPU, attention="auto")
    assert gpu.unet_scores == 0 and gpu.decode_scores == 0  # cuDNN; the VAE's 512-wide head: chunked
    long = estimate(frames=64, context=ContextOptions(16, 4))
    assert long.unet == estimate().unet  # scope "unet": one window of 16 frames per call
    assert estimate(frames=64, context=ContextOptions(16, 4, scope="motion")).unet == estimate(frames=64).unet


def test_host_available_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   2097152 kB\n")
    assert mem.host_available(str(meminfo), str(tmp_path / "no-cgroup")) == 2 * GIB
    assert mem.host_available(str(tmp_path / "absent"), str(tmp_path / "no-cgroup")) is None


def test_host_available_is_lowered_to_a_containers_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable:   8388608 kB\n")  # 8 GiB free on the host
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{3 * GIB}\n")
    (v2 / "memory.current").write_text(f"{GIB}\n")
    assert mem.host_available(str(meminfo), str(v2)) == 2 * GIB  # the container's 3 GiB, 1 GiB used
    (v2 / "memory.max").write_text("max\n")
    assert mem.host_available(str(meminfo), str(v2)) == 8 * GIB  # no limit
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{4 * GIB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{GIB}\n")
    assert mem.host_available(str(meminfo), str(tmp_path / "v1")) == 3 * GIB
    assert mem.host_available(str(tmp_path / "absent"), str(tmp_path / "v1")) == 3 * GIB
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert mem.host_available(str(meminfo), str(tmp_path / "v1")) == 8 * GIB


def test_an_accelerator_is_compared_with_its_own_memory(monkeypatch):
    est = estimate(dtype="bfloat16", platform=GPU, attention="auto")
    monkeypatch.setattr(mem, "host_available", lambda: 64 * GIB)
    monkeypatch.setattr(mem, "device_available", lambda: 2 * GIB)
    assert mem.shortfall(est, GPU) == (est.device, 2 * GIB, "GPU memory")
    monkeypatch.setattr(mem, "device_available", lambda: 80 * GIB)
    assert mem.shortfall(est, GPU) is None
    assert mem.shortfall(est, CPU) is None  # on CPU the host holds everything: 64 GiB is enough


def test_parameters_are_counted_from_the_conversion_plan_or_the_converted_headers(tmp_path):
    """What the weights term counts: the networks' own parameters (their traced shapes), the same
    whether the base is still a diffusers folder or converted, plus the motion module's."""
    cache = str(tmp_path / "cache")
    base = write_base_folder(str(tmp_path / "base"))
    planned = loading.check_files(loading.ModelFiles(base=base), cache)
    configs = planned.base.configs
    traced = sum(math.prod(shape) for net in loading.NETWORKS
                 for shape in flax_param_shapes(net, configs[net]).values())
    assert planned.base.plan is not None and loading.parameter_count(planned) == traced
    loading.read_sd_model(planned.base, "base")  # converts it
    converted = loading.check_files(loading.ModelFiles(base=base), cache)
    assert converted.base.plan is None and loading.parameter_count(converted) == traced
    mini = loading.check_files(loading.ModelFiles(base=os.path.join(MINIATURE, "base"),
                                                  motion_module=motion_path(MINIATURE, "B")), cache)
    alone = loading.check_files(loading.ModelFiles(base=os.path.join(MINIATURE, "base")), cache)
    assert loading.parameter_count(mini) - loading.parameter_count(alone) == \
        sum(np.size(a) for a in jax.tree.leaves(mini.motion.params))


@pytest.fixture
def jobs(tmp_path, monkeypatch):
    """A machine with 16 GiB available; the jobs that passed validation (none loads a model)."""
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mem, "host_available", lambda: 16 * GIB)
    return stop_at_load(monkeypatch)


HUGE = ["--width", "8192", "--height", "8192", "--out", "out"]


def test_an_absurd_size_is_refused_in_one_line_before_any_model_loads(jobs, capsys):
    start = time.process_time()
    assert sample.main(HUGE) == 2  # not Validated: load_pipeline was never reached
    assert time.process_time() - start < 10  # configs and headers only (a real run compiles for minutes)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not os.path.exists("out") and not jobs, err
    assert err.startswith("error: miniature base + motion module: --width/--height (W/H) 8192x8192 x --frames (L) 16: "
                          "needs ~"), err
    assert "16.0 GiB of host memory available; lower them" in err and "--allow-over-memory" in err, err


def test_the_hint_names_the_setting_that_would_help(jobs, capsys):
    assert sample.main(["--width", "2048", "--height", "2048", "--attention", "xla", "--out", "out"]) == 2
    assert "use --attention chunked" in capsys.readouterr().err
    assert sample.main(["--width", "4096", "--height", "4096", "--decode-chunk", "16", "--out", "out"]) == 2
    assert "use a smaller --decode-chunk" in capsys.readouterr().err


def test_allow_over_memory_lets_a_user_who_knows_better_run(jobs):
    with pytest.raises(Validated):
        sample.main(HUGE + ["--allow-over-memory"])
    assert jobs[0].sizes == dict(width=8192, height=8192, frames=16)


def test_the_default_sample_fits(jobs):
    with pytest.raises(Validated):
        sample.main(["--out", "out"])
