"""Hub ids resolve through the Hugging Face cache, offline: a local cache in the hub's own layout
(`tests.utils.cache_repo`), HF_HUB_CACHE pointed at it and HF_HUB_OFFLINE=1 (`tests.utils.use_hub_cache`);
`org/name`, a branch and a commit hash load like the folders they hold; an id that is not cached
gives a clear error."""
import os

import numpy as np
import pytest

from animatediff_jax.params import flatten
from convert.base import load_base
from convert.io import CheckpointError
from tests.convert.ldm_fixtures import build, save_folder
from tests.utils import cache_repo, use_hub_cache

MAIN, OTHER = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_cache")
    cache_repo(root, "org/tiny-sd", lambda d: save_folder(d, *build("small", seed=0)), commit=MAIN)
    snapshot = cache_repo(root, "org/tiny-sd", lambda d: save_folder(d, *build("small", seed=10)), "finetuned", OTHER)
    return root, snapshot.parent.parent


@pytest.fixture
def offline(cache, monkeypatch):
    use_hub_cache(cache[0], monkeypatch)
    return cache


def _same(a, b):
    for name in ("unet", "vae", "text_encoder"):
        x, y = flatten(getattr(a, name)), flatten(getattr(b, name))
        assert set(x) == set(y)
        if not all(np.array_equal(np.asarray(x[p]), np.asarray(y[p])) for p in y):
            return False
    return True


def test_hub_id_and_revisions_load_from_the_cache(offline):
    _, repo = offline
    main = load_base(str(repo / "snapshots" / MAIN), progress=False)
    other = load_base(str(repo / "snapshots" / OTHER), progress=False)
    assert not _same(main, other)
    by_id = load_base("org/tiny-sd", progress=False)
    assert _same(by_id, main) and by_id.tokenizer_path is None
    assert by_id.scheduler_config["_class_name"] == "DDIMScheduler"
    assert _same(load_base("org/tiny-sd", revision="finetuned", progress=False), other)
    assert _same(load_base("org/tiny-sd", revision=OTHER, progress=False), other)


def test_uncached_id_offline_is_a_clear_error(offline):
    root, _ = offline
    with pytest.raises(CheckpointError, match=r"org/not-cached.*not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        load_base("org/not-cached", progress=False)
    with pytest.raises(CheckpointError, match=r"revision nope.*not in the Hugging Face cache"):
        load_base("org/tiny-sd", revision="nope", progress=False)
    assert sorted(os.listdir(root)) == ["models--org--tiny-sd"]  # nothing written to the cache
