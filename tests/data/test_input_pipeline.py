"""Input pipeline: disjoint per-host shards, seeded shuffle, resume without repeat or skip."""
import numpy as np
import pytest

from animatediff_jax.data import procedural
from animatediff_jax.data.pipeline import InputPipeline, ProceduralSource, load_source
from animatediff_jax.data.procedural_tfds import ProceduralConfig, ProceduralVideos


@pytest.fixture(scope="module")
def procedural_tfds(tmp_path_factory):
    config = ProceduralConfig(name="tiny", num_examples=24, seed=5, frames=3, size=16, style="dots")
    builder = ProceduralVideos(config=config, data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return load_source(builder.data_dir)


def test_procedural_builder_matches_the_world(procedural_tfds):
    assert len(procedural_tfds) == 24
    seen = set()
    for i in range(len(procedural_tfds)):
        ex = procedural_tfds[i]
        index = int(ex["index"])
        video, caption = procedural.generate_clip(5, index, frames=3, size=16, style="dots")
        assert np.array_equal(ex["video"], video) and ex["caption"].decode() == caption
        assert ex["color"].decode() in caption and ex["direction"].decode() in caption
        seen.add(index)
    assert seen == set(range(24))


def _indices(pipeline, steps):
    return [int(i) for _ in range(steps) for i in next(pipeline)["dataset_index"]]


def test_two_hosts_read_disjoint_shards_covering_the_dataset(procedural_tfds):
    hosts = [InputPipeline(procedural_tfds, batch_size=4, seed=1, process_index=p, process_count=2)
             for p in range(2)]
    batch = next(hosts[0])
    assert batch["video"].shape == (4, 3, 16, 16, 3) and batch["video"].dtype == np.uint8
    assert len(batch["caption"]) == 4 and isinstance(batch["caption"][0], str)
    epoch = [[int(i) for i in batch["dataset_index"]] + _indices(hosts[0], 2), _indices(hosts[1], 3)]
    assert not set(epoch[0]) & set(epoch[1])
    assert sorted(epoch[0] + epoch[1]) == list(range(24))
    # The next epoch is another permutation, still disjoint and complete.
    nxt = [_indices(hosts[0], 3), _indices(hosts[1], 3)]
    assert sorted(nxt[0] + nxt[1]) == list(range(24)) and nxt[0] != epoch[0]
    for h in hosts:
        h.close()


def test_uneven_split_keeps_hosts_equal_and_disjoint():
    source = ProceduralSource(10, frames=1, size=16)
    hosts = [InputPipeline(source, batch_size=1, seed=3, process_index=p, process_count=3, shuffle=True)
             for p in range(3)]
    got = [_indices(h, 3) for h in hosts]
    assert all(len(g) == 3 for g in got) and len(set(sum(got, []))) == 9
    assert all(h.steps_per_epoch == 3 for h in hosts)


@pytest.mark.parametrize("stop_after", [1, 4, 7])
def test_stop_and_resume_continues_exactly(stop_after):
    source = ProceduralSource(14, seed=2, frames=2, size=16)
    kw = dict(batch_size=3, seed=9, process_index=1, process_count=2, random_flip=True)
    reference = InputPipeline(source, **kw)
    ref_batches = [next(reference) for _ in range(9)]  # 27 examples: crosses 3 epochs of 7
    first = InputPipeline(source, **kw)
    for _ in range(stop_after):
        next(first)
    state = first.state()
    first.close()
    resumed = InputPipeline(source, **kw)
    resumed.restore(state)
    for ref in ref_batches[stop_after:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["dataset_index"], ref["dataset_index"])
        np.testing.assert_array_equal(got["video"], ref["video"])  # same flips too
    seen = np.concatenate([b["dataset_index"] for b in ref_batches])[:21].reshape(3, 7)
    assert all(len(set(row)) == 7 and set(row) <= set(range(14)) for row in seen)  # epochs: no repeats


def test_flip_mirrors_and_shuffle_is_seeded():
    source = ProceduralSource(8, frames=2, size=16)
    flipped = next(InputPipeline(source, batch_size=8, seed=0, shuffle=False, random_flip=True))
    flips = [np.array_equal(v, source[i]["video"][:, :, ::-1]) and not np.array_equal(v, source[i]["video"])
             for i, v in zip(flipped["dataset_index"], flipped["video"])]
    same = [np.array_equal(v, source[i]["video"]) for i, v in zip(flipped["dataset_index"], flipped["video"])]
    assert all(a or b for a, b in zip(flips, same)) and any(flips) and any(same)
    a = next(InputPipeline(source, batch_size=8, seed=4))["dataset_index"]
    b = next(InputPipeline(source, batch_size=8, seed=4))["dataset_index"]
    c = next(InputPipeline(source, batch_size=8, seed=5))["dataset_index"]
    assert list(a) == list(b) and list(a) != list(c)


def test_bad_arguments_and_mismatched_resume():
    source = ProceduralSource(4, frames=1, size=16)
    with pytest.raises(ValueError, match="cannot be split over 8 processes"):
        InputPipeline(source, batch_size=1, process_count=8, process_index=0)
    with pytest.raises(ValueError, match="empty"):
        InputPipeline([], batch_size=1)
    p = InputPipeline(source, batch_size=2, process_count=2, process_index=0)
    with pytest.raises(ValueError, match="process_count=4"):
        p.restore({"examples_seen": 2, "process_count": 4})
    finite = InputPipeline(source, batch_size=2, num_epochs=1)
    assert len(list(finite)) == 2


def test_train_input_position_is_the_step():
    from animatediff_jax.data.train_input import TrainInput, source_from_config

    source = source_from_config({"source": "procedural", "num_clips": 12, "sample_n_frames": 2, "sample_size": 16})
    tokenizer = lambda captions: np.array([[len(c)] for c in captions], np.int32)  # noqa: E731
    hosts = [TrainInput(source, tokenizer, global_batch=4, rows=(r, r + 2), seed=1) for r in (0, 2)]
    run = [[h(step) for step in range(5)] for h in hosts]  # crosses an epoch (3 steps of 2 per host)
    for step in range(3):
        a, b = ({v.tobytes() for v in run[h][step]["video"]} for h in (0, 1))
        assert len(a | b) == 4  # 4 different clips per global batch
    assert run[0][0]["input_ids"].shape == (2, 1) and run[0][0]["video"].shape == (2, 2, 16, 16, 3)
    resumed = TrainInput(source, tokenizer, global_batch=4, rows=(2, 4), seed=1)
    for step in (3, 4):  # a run restarted at step 3 continues exactly
        np.testing.assert_array_equal(resumed(step)["video"], run[1][step]["video"])
    with pytest.raises(ValueError, match="do not tile"):
        TrainInput(source, tokenizer, global_batch=5, rows=(0, 2))
    with pytest.raises(ValueError, match="dataset_dir"):
        source_from_config({"source": "tfds"})
