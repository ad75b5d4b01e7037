"""The denoising step is written to and reloaded from JAX's persistent compilation cache, with the
progress bar on: two fresh processes sample the same small video; the second reads the step from disk,
and the traced programs too (`program_cache`): it never traces the UNet, the VAE or the text encoder."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from animatediff_jax.sampling.pipeline import enable_compilation_cache

SCRIPT = textwrap.dedent("""
    import dataclasses, json, logging, sys
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    from animatediff_jax.sampling.pipeline import AnimateDiffPipeline, enable_compilation_cache
    from animatediff_jax.tiny_models import TINY_MOTION, TINY_TEXT, TINY_UNET, TINY_VAE, write_byte_tokenizer
    from animatediff_jax.tokenizer import PromptTokenizer

    hits, misses, traced = [], [], []
    from animatediff_jax.models import clip_text, unet3d, vae
    for cls, method in ((unet3d.UNet3DConditionModel, "__call__"), (vae.AutoencoderKL, "decode"),
                        (clip_text.CLIPTextModel, "__call__")):
        def counting(self, *a, original=getattr(cls, method), name=cls.__name__, **k):
            traced.append(name)
            return original(self, *a, **k)
        setattr(cls, method, counting)

    class Record(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("Persistent compilation cache hit for"):
                hits.append(msg.split("'")[1])
            elif msg.startswith("PERSISTENT COMPILATION CACHE MISS for"):
                misses.append(msg.split("'")[1])

    log = logging.getLogger("jax._src.compiler")
    log.setLevel(logging.DEBUG)
    log.addHandler(Record())
    cache = enable_compilation_cache()
    tok = PromptTokenizer.from_pretrained(write_byte_tokenizer(sys.argv[1]))
    pipe = AnimateDiffPipeline.random(TINY_UNET, dataclasses.replace(TINY_MOTION, max_seq_length=16), TINY_VAE,
                                      TINY_TEXT, tok, dtype="float32")
    traced.clear()  # random() traces the networks' init
    out = pipe(["a cat"], seeds=[7], width=16, height=16, frames=4, steps=3, progress=True)
    print(json.dumps(dict(hits=hits, misses=misses, cache=cache, traced=sorted(set(traced)),
                          checksum=float(abs(out.latents).sum()), frames=float(abs(out.frames).sum()))))
""")


def _run(tmp_path, cache):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), ANIMATEDIFF_JAX_CACHE=str(tmp_path / "root"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "tok")], env=env, capture_output=True,
                          text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_second_run_loads_the_denoise_step_from_the_cache(tmp_path):
    cache = tmp_path / "jax_cache"
    first, err1 = _run(tmp_path, cache)
    assert first["cache"] == str(cache)
    assert "3/3" in err1  # the progress bar ran to the end
    assert "jit_unet_denoise_step" in first["misses"] and "jit_unet_denoise_step" not in first["hits"]
    written = set(os.listdir(cache))
    assert any("unet_denoise_step" in f for f in written), sorted(written)
    second, err2 = _run(tmp_path, cache)
    assert "3/3" in err2
    assert "jit_unet_denoise_step" in second["hits"], second
    assert "jit_unet_denoise_step" not in second["misses"], second
    assert second["checksum"] == first["checksum"]  # the cached executable computes the same video
    assert second["frames"] == first["frames"]
    assert first["traced"] == ["AutoencoderKL", "CLIPTextModel", "UNet3DConditionModel"]
    assert second["traced"] == []  # every program came from disk (program_cache)
    programs = sorted(f.split("-")[0] for f in os.listdir(tmp_path / "root" / "programs"))
    assert programs == ["text_encode", "unet_denoise_step", "vae_decode"], programs


def test_unwritable_cache_folder_warns_and_leaves_the_cache_off(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match=r"a-file/jax_cache: cannot create it \(Not a directory\)"):
        assert enable_compilation_cache(str(blocker / "jax_cache")) is None
