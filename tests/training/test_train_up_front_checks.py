"""Up-front checks of the training command a user met failing late: a resumed run whose config changes the
trained state's shapes (it failed in the restore, after the models loaded, in a page of orbax noise), a base
folder without a tokenizer (a traceback after JAX started; --check-config said ok), a model file of the
wrong kind or format (an error that did not name the config key, or named a missing key)."""
import json
import os

import pytest

from animatediff_jax import train
from animatediff_jax.training import trainer
from animatediff_jax.training import config
from animatediff_jax.training.config import load_config
from tests.training import tiny

MINIATURE = "animatediff_jax/assets/miniature"


@pytest.fixture
def tok(tmp_path):
    return tiny.write_tokenizer(tmp_path / "tok")


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(trainer, "setup_mesh", lambda *a, **k: pytest.fail("training started"))


def test_layout_changes_name_the_keys_that_change_shapes_or_architecture_only(tok):
    saved = load_config(None, tiny.overrides(tok)).to_dict()
    changed = lambda **extra: config.layout_changes(saved, load_config(None, tiny.overrides(tok, **extra)).to_dict())  # noqa: E731
    assert changed(max_train_steps=9, learning_rate=1e-3, max_grad_norm=2.0) == []
    assert changed(motion_module_version="v1", max_train_steps=9) == [("motion_module_version", "v2", "v1")]
    assert changed(trainable_modules=["."]) == [("trainable_modules", ["motion_modules."], ["."])]
    assert changed(max_grad_norm=0) == [("max_grad_norm", 1.0, 0.0)]  # no clipping stage: another optimizer state
    assert changed(lora={"rank": 4, "targets": "unet"}) == [("lora.rank", 0, 4)]
    # same shapes, another network: the trained weights would silently belong to another architecture
    assert changed(motion_module_kwargs={"num_attention_heads": 4, "norm_num_groups": 8, "max_seq_length": 8}) == [
        ("motion_module_kwargs.num_attention_heads", 2, 4)]
    assert changed(motion_module_kwargs={"num_attention_heads": 2, "norm_num_groups": 4, "max_seq_length": 16}) == [
        ("motion_module_kwargs.norm_num_groups", 8, 4)]  # a longer position encoding extends it: resumable


def _saved_run(workdir, overrides: list[str], step: int) -> None:
    """A workdir whose checkpoint `step` records the config of `overrides` (its state is never read)."""
    meta = os.path.join(workdir, "checkpoints", str(step), "meta")
    os.makedirs(meta)
    with open(os.path.join(meta, "metadata"), "w") as f:
        json.dump({"step": step, "position": step, "config": load_config(None, overrides).to_dict()}, f)


def test_resuming_with_a_changed_shape_is_one_line_before_the_models(tok, tmp_path, no_training, capsys):
    workdir = str(tmp_path / "w")
    _saved_run(workdir, tiny.overrides(tok, max_train_steps=6), 6)
    assert train.main(["--workdir", workdir, *tiny.overrides(tok, max_train_steps=9,
                                                             motion_module_version="v1")]) == 2
    assert capsys.readouterr().err == (
        f"error: motion_module_version 'v2' -> 'v1': changes the tree, shapes or architecture of the trained state "
        f"(parameters, optimizer state), so checkpoint {workdir}/checkpoints/6 of this run cannot be resumed with it; use a new "
        "--workdir, or set it back\n")


def test_a_base_without_a_tokenizer_is_refused_by_check_config_and_before_jax(tmp_path, no_training, capsys):
    base = f"{MINIATURE}/dreambooth"  # the shipped DreamBooth folder has no tokenizer/
    args = ["--config", "configs/training/miniature.yaml", "--workdir", str(tmp_path / "w"), "max_train_steps=2",
            "validation_steps_tuple=[]", f"pretrained_model_path={base}"]
    for check in (["--check-config"], []):
        assert train.main([*check, *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: pretrained_model_path: {base} has no tokenizer (a folder without "
                              "tokenizer/); set tokenizer_path=") and err.count("\n") == 1, err


@pytest.mark.parametrize("key, path, problem", [
    ("pretrained_model_path", "README.md", "README.md: unknown checkpoint format"),
    ("motion_module_path", f"{MINIATURE}/motion_lora_right.safetensors",
     f"{MINIATURE}/motion_lora_right.safetensors: a motion LoRA, not what motion_module_path takes; sample's "
     "--motion-lora takes it"),
    ("pretrained_model_path", f"{MINIATURE}/lora_checker.safetensors",
     f"{MINIATURE}/lora_checker.safetensors: a LoRA, not what pretrained_model_path takes; sample's --lora or "
     "sample's --domain-adapter take it"),
    ("pretrained_model_path", f"{MINIATURE}/motion_module_B.safetensors",
     f"{MINIATURE}/motion_module_B.safetensors: a converted motion module (v2), not what pretrained_model_path "
     "takes; motion_module_path takes it"),
    ("motion_module_path", f"{MINIATURE}/base",
     f"{MINIATURE}/base: a converted SD1.x model folder, not what motion_module_path takes; pretrained_model_path "
     "or sample's --dreambooth take it"),
])
def test_a_model_file_of_another_kind_is_named_by_its_key(tmp_path, no_training, capsys, key, path, problem):
    args = ["--config", "configs/training/miniature.yaml", "--workdir", str(tmp_path / "w"), f"{key}={path}"]
    for check in (["--check-config"], []):
        assert train.main([*check, *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {key}: {problem}") and err.count("\n") == 1, err
