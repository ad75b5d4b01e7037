"""Resuming a workdir with a config that changes what the run computes says so in one warning line,
naming each change (old -> new) and, for the learning-rate schedule, the rate the resumed run continues at."""
import pytest

from animatediff_jax.training import trainer
from animatediff_jax.training.config import config_changes, load_config
from tests.training import tiny


@pytest.fixture
def tok(tmp_path):
    return tiny.write_tokenizer(tmp_path / "tok")


def test_config_changes_name_what_the_run_computes_only(tok):
    saved = load_config(None, tiny.overrides(tok)).to_dict()
    current = load_config(None, tiny.overrides(tok, max_train_steps=6, checkpointing_steps=5, log_every_steps=2,
                                               train_data={"sample_size": 32, "sample_n_frames": 4,
                                                           "num_clips": 64, "seed": 3})).to_dict()
    assert config_changes(saved, current) == [("max_train_steps", 3, 6), ("train_data.seed", 0, 3)]
    assert config_changes(saved, saved) == []


def test_resuming_with_a_changed_schedule_warns_with_the_rates(tok, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    schedule = {"lr_scheduler": "cosine", "learning_rate": 1e-3, "export_formats": ["diffusers"]}
    trainer.train(load_config(None, tiny.overrides(tok, max_train_steps=2, **schedule)), workdir)
    assert "warning" not in capsys.readouterr().err
    result = trainer.train(load_config(None, tiny.overrides(tok, max_train_steps=4, checkpointing_steps=4,
                                                            **schedule)), workdir)
    assert result["start"] == 2 and result["step"] == 4
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: resuming step 2 with a config that differs from the run's: max_train_steps 2 -> 4; "
                        "the learning rate follows the new schedule from here: 0.0005 at step 2 (the saved run's: 0)"]
