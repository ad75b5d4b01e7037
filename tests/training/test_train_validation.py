"""Validation sampling during training: GIFs of the configured prompts at the configured steps,
decodable to the requested frames and size, and no effect on training (bit-equal final params)."""
import os

import jax
import numpy as np
import pytest

from animatediff_jax.errors import UsageError
from animatediff_jax.training import trainer
from animatediff_jax.training.config import load_config
from animatediff_jax.video import read_video
from tests.training import tiny

VALIDATION = {"prompts": ["abc", "xyz"], "num_inference_steps": 2, "guidance_scale": 7.5,
              "video_length": 4, "width": 40, "height": 24}


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny.write_tokenizer(tmp_path_factory.mktemp("tok"))


def test_validation_gifs_at_step_2_leave_training_unchanged(tok, tmp_path):
    plain = trainer.train(load_config(None, tiny.overrides(tok)), str(tmp_path / "plain"))
    run = tmp_path / "validated"
    result = trainer.train(load_config(None, tiny.overrides(tok, validation_steps=2, validation_data=VALIDATION)),
                         str(run))

    assert sorted(os.listdir(run / "samples")) == ["step-2"]          # steps 1 and 3 are not due
    folder = run / "samples" / "step-2"
    assert sorted(os.listdir(folder)) == ["00.gif", "01.gif", "grid.gif", "prompts.json"]
    for name in ("00.gif", "01.gif"):
        frames = read_video(str(folder / name))
        assert frames.shape == (4, 24, 40, 3)
        assert frames.std() > 0                                      # a picture, not a blank
    assert read_video(str(folder / "grid.gif")).shape[0] == 4

    # Sampling only read the train state: the run ends exactly where the unvalidated one does.
    assert result["step"] == plain["step"] == 3 and result["loss"] == plain["loss"]
    np.testing.assert_array_equal(_flat(result["params"]), _flat(plain["params"]))


def test_bad_validation_config_fails_on_load(tok):
    with pytest.raises(UsageError, match="^validation_data.prompts: empty"):
        load_config(None, tiny.overrides(tok, validation_steps=2))
    with pytest.raises(UsageError, match="^validation_data.width: 30 pixels; .*multiples of 8"):
        load_config(None, tiny.overrides(tok, validation_steps_tuple=[2], validation_data=dict(VALIDATION, width=30)))
    with pytest.raises(UsageError, match="^validation_data.video_length: 9 frames exceed .* max_seq_length 8"):
        load_config(None, tiny.overrides(tok, validation_steps_tuple=[2],
                                         validation_data=dict(VALIDATION, video_length=9)))
