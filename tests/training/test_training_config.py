"""The typed training config: YAML + overrides merge, numbers by field type, every bad value refused
on load naming its dotted key, and the command line answering (help, config errors) without JAX."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from animatediff_jax import schedules, sharding, train
from animatediff_jax.data import procedural
from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.miniature import world
from animatediff_jax.miniature.shipped import MINIATURE
from animatediff_jax.models import attention
from animatediff_jax.models.configs import UNetConfig
from animatediff_jax.training import config as config_lib
from animatediff_jax.training import metrics
from animatediff_jax.training.config import load_config

TOKENIZER = ["tokenizer_path=."]   # any existing folder: the config only checks that it exists


def test_file_and_overrides_merge_into_typed_sections(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("learning_rate: 3.0e-5\ntrain_data:\n  sample_n_frames: 8\nunet_config: {sample_size: 16}\n")
    cfg = load_config(str(path), TOKENIZER + ["mesh.fsdp=4", "trainable_modules=[motion_modules., lora]",
                                              "unet_config.layers_per_block=1"])
    assert cfg.learning_rate == 3e-5 and cfg.train_data.sample_n_frames == 8
    assert cfg.train_data.sample_size == 256 and (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) == (-1, 4, 1)
    assert cfg.trainable_modules == ("motion_modules.", "lora")
    assert cfg.unet_config == UNetConfig(layers_per_block=1, sample_size=16)
    with pytest.raises(AttributeError):
        cfg.learning_rate = 1.0                                          # frozen
    assert cfg.to_dict()["train_data"]["sample_n_frames"] == 8 and cfg.to_dict()["trainable_modules"][1] == "lora"


def test_unknown_keys_and_malformed_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("train_data:\n  sample_n_frame: 8\n")
    with pytest.raises(UsageError, match=r"^\S*t\.yaml: train_data\.sample_n_frame: unknown config key "
                                         r"\(did you mean train_data\.sample_n_frames\?\)"):
        load_config(str(path))
    with pytest.raises(UsageError, match=r"^learning_rat: unknown config key \(did you mean learning_rate\?\)"):
        load_config(None, ["learning_rat=1"])
    with pytest.raises(UsageError, match=r"^motion_module_kwargs\.max_seq_len: unknown config key"):
        load_config(None, ["motion_module_kwargs.max_seq_len=8"])
    with pytest.raises(UsageError, match="^learning_rate: a command-line override is dotted.key=value"):
        load_config(None, ["learning_rate"])
    with pytest.raises(UsageError, match=r"^trainable_modules: value .* is not valid YAML"):
        load_config(None, ["trainable_modules=[a,"])


def test_files_that_cannot_be_read_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.yaml: training config not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"learning_rate: \xff\xfe\n")
    with pytest.raises(InputError, match=r"bad\.yaml: training config is not UTF-8 text"):
        load_config(str(bad))
    bad.write_text("learning_rate: [1,\n")
    with pytest.raises(InputError, match=r"bad\.yaml: training config is not valid YAML: line"):
        load_config(str(bad))
    bad.write_text("- a\n- b\n")
    with pytest.raises(InputError, match=r"bad\.yaml: training config must be a YAML mapping"):
        load_config(str(bad))


def test_numbers_are_parsed_by_field_type(tmp_path):
    # YAML 1.1 reads 1e-4 and 1e30 (no dot) as strings; the float fields still get numbers.
    path = tmp_path / "t.yaml"
    path.write_text("learning_rate: 1e-4\nadam_epsilon: 1e-8\n")
    cfg = load_config(str(path), TOKENIZER + ["max_grad_norm=1e30", "max_train_steps=1e3", "global_seed=7.0"])
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float) and cfg.adam_epsilon == 1e-8
    assert cfg.max_grad_norm == 1e30 and cfg.max_train_steps == 1000 and cfg.global_seed == 7
    assert isinstance(cfg.max_train_steps, int) and isinstance(cfg.global_seed, int)
    # A text field keeps the override's text, even when YAML would read a number (or octal).
    assert config_lib.parse_override("pretrained_model_path=0123") == {"pretrained_model_path": "0123"}
    assert config_lib.parse_override("train_data.dataset_dir=2024") == {"train_data": {"dataset_dir": "2024"}}
    assert config_lib.parse_override("max_train_steps=0123") == {"max_train_steps": 83}   # YAML's reading


BAD_VALUES = [
    # (override, the start of the message)
    ("learning_rate=abc", "learning_rate: expected a number, got 'abc'"),
    ("learning_rate=nan", "learning_rate: must be finite"),
    ("learning_rate=.inf", "learning_rate: must be finite"),
    ("learning_rate=0", "learning_rate: must be > 0"),
    ("learning_rate=1e30", r"learning_rate: must be <= 1, got 1e\+30"),  # saved a step of 1e30 weights, then NaN
    ("learning_rate=true", "learning_rate: expected a number"),
    ("adam_beta2=1", "adam_beta2: must be < 1"),
    ("cfg_random_null_text_ratio=1.5", "cfg_random_null_text_ratio: must be <= 1"),
    ("max_train_steps=0", "max_train_steps: must be >= 1"),
    ("max_train_steps=2.5", "max_train_steps: expected an integer, got 2.5"),
    ("train_batch_size=[4]", "train_batch_size: expected an integer"),
    ("checkpointing_steps=-1", "checkpointing_steps: must be >= 1"),
    ("validation_steps_tuple=[2, 0]", r"validation_steps_tuple\[1\]: must be >= 1"),
    ("mixed_precision_training=1", "mixed_precision_training: expected true or false"),
    ("export_formats=[orignal]", r"export_formats\[0\]: must be one of original, diffusers; got 'orignal'"),
    ("export_formats=[original, original]", "export_formats: a format is listed twice"),
    ("export_formats=original", "export_formats: expected a list"),
    ("noise_schedule=D", "noise_schedule: must be one of A, B, C"),
    ("prediction_type=sample", "prediction_type: must be one of epsilon, v_prediction"),
    ("lr_scheduler=step", "lr_scheduler: must be one of constant, cosine, linear"),
    ("attention_impl=flash", "attention_impl: must be one of auto, xla, chunked, cudnn, tpu_flash"),
    ("motion_module_version=2", "motion_module_version: must be one of v1, v2, v3; got '2'"),
    ("train_data.source=web", "train_data.source: must be one of procedural, tfds"),
    ("train_data.style=wavy", "train_data.style: must be one of plain"),
    ("train_data.num_clips=0", "train_data.num_clips: must be >= 1"),
    ("train_data.source=tfds", "train_data.dataset_dir: train_data.source tfds needs"),
    ("train_data=3", "train_data: a section; give a mapping"),
    ("mesh.fsdp=0", "mesh: sizes must be >= 1, with at most one -1"),
    ("mesh={data: -1, fsdp: -1}", "mesh: sizes must be >= 1, with at most one -1"),
    ("mesh.tensor=-2", "mesh.tensor: must be >= -1"),
    ("sharding_rules=[[a(, [fsdp]]]", r"sharding_rules\[0\]\[0\]: 'a\(' is not a regular expression"),
    ("sharding_rules=[[a, [fsdp, model]]]", r"sharding_rules\[0\]\[1\]\[1\]: must be one of data, fsdp, tensor"),
    ("trainable_modules=[motion_modules.(]", r"trainable_modules\[0\]: .* is not a regular expression"),
    ("gradient_accumulation_steps=3", "gradient_accumulation_steps: 3 does not divide train_batch_size 4"),
    ("unet_config.layers_per_block=two", "unet_config.layers_per_block: expected an integer"),
    ("motion_module_kwargs.input_norm=both", "motion_module_kwargs.input_norm: must be one of frame, joint"),
    ("train_data.sample_n_frames=40", "train_data.sample_n_frames: 40 frames exceed the motion module's "
                                      "max_seq_length 32"),
    ("lora.rank=-1", "lora.rank: must be >= 0"),
    ("lora.alpha=0", "lora.alpha: must be > 0"),
    ("lora.targets=text", "lora.targets: must be one of motion, unet"),
    ("lora.rank=4", "lora.targets: motion .MotionLoRA. adapts an existing motion module"),
    ("distributed.initialize=maybe", "distributed.initialize: expected true or false or one of auto"),
    ("distributed.num_processes=2", "distributed.coordinator_address: give coordinator_address, num_processes"),
    ("validation_steps=10", "validation_data.prompts: empty"),
    ("validation_data.guidance_scale=nan", "validation_data.guidance_scale: must be finite"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_every_bad_value_is_refused_on_load_naming_its_key(override, message):
    with pytest.raises(UsageError, match="^" + message):
        load_config(None, TOKENIZER + [override])


def test_relations_and_paths_are_checked_on_load(tmp_path):
    for path in (None, "configs/training/training.yaml", "configs/training/motion_lora.yaml"):  # no base given
        with pytest.raises(UsageError) as e:
            load_config(path, [])
        assert str(e.value).startswith("pretrained_model_path: not set; name the base model"), (path, e.value)
    with pytest.raises(InputError, match=f"^pretrained_model_path: {tmp_path}/sd15: no such file"):
        load_config(None, [f"pretrained_model_path={tmp_path}/sd15"])
    with pytest.raises(UsageError, match="^vae_config: describes a random base"):
        load_config(None, [f"pretrained_model_path={tmp_path}", "vae_config.latent_channels=4"])
    with pytest.raises(UsageError, match="^motion_module_path: given with image_finetune"):
        load_config(None, TOKENIZER + ["image_finetune=true", f"motion_module_path={tmp_path}"])
    with pytest.raises(UsageError, match="^distributed.process_id: 2 is not below num_processes 2"):
        load_config(None, TOKENIZER + ["distributed={coordinator_address: 'h:1', num_processes: 2, process_id: 2}"])
    with pytest.raises(UsageError, match=r"^lora.file: 'x.ckpt': a kohya LoRA is written as \.safetensors"):
        load_config(None, TOKENIZER + ["lora={rank: 2, targets: unet, file: x.ckpt}"])
    assert load_config(None, TOKENIZER + ["distributed.initialize=auto"]).distributed.initialize == "auto"
    with pytest.raises(UsageError, match=f"^train_data.dataset_dir: {tmp_path} is given, but train_data.source is "
                                         "procedural .*: add train_data.source=tfds to train on it"):
        load_config(None, TOKENIZER + [f"train_data.dataset_dir={tmp_path}"])  # a dataset the run would not read


def test_a_warmup_longer_than_the_run_is_said_before_training():
    assert config_lib.warmup_warning(load_config(None, TOKENIZER + ["max_train_steps=100",
                                                                     "lr_warmup_steps=100"])) is None
    long = load_config(None, TOKENIZER + ["max_train_steps=100", "lr_warmup_steps=300", "learning_rate=1e-4"])
    assert config_lib.warmup_warning(long) == (
        "warning: lr_warmup_steps 300 exceeds max_train_steps 100: the learning rate rises only to 33% of "
        "learning_rate 0.0001 by the last step")


def test_a_validation_size_that_follows_sample_size_names_sample_size():
    """train_data.sample_size=33 was refused as 'validation_data.width: 33 pixels', a key never set."""
    with pytest.raises(UsageError) as e:
        load_config("configs/training/miniature.yaml", ["train_data.sample_size=33"])
    assert str(e.value) == ("train_data.sample_size: 33 pixels, which validation_data.width (null) follows; "
                            "validation width and height must be multiples of 8")
    with pytest.raises(UsageError, match="^validation_data.height: 20 pixels; "):
        load_config("configs/training/miniature.yaml", ["validation_data.height=20"])


def test_shipped_configs_load():
    for name in ("training", "image_finetune", "motion_lora"):
        extra = ["motion_module_path=."] if name == "motion_lora" else []
        cfg = load_config(f"configs/training/{name}.yaml", TOKENIZER + extra)
        assert cfg.noise_schedule == "B" and cfg.learning_rate > 0
    lora = load_config("configs/training/motion_lora.yaml", TOKENIZER + ["motion_module_path=."]).lora
    assert (lora.rank, lora.alpha, lora.targets, lora.file) == (4, None, "motion", "motion_lora.ckpt")
    assert load_config("configs/training/training.yaml", TOKENIZER).validation_data.prompts
    assert load_config("configs/training/image_finetune.yaml", TOKENIZER).motion_config is None


def test_the_miniature_config_fits_the_shipped_miniature():
    cfg = load_config("configs/training/miniature.yaml")   # as the README runs it: no overrides
    assert os.path.samefile(cfg.pretrained_model_path, os.path.join(MINIATURE, "base"))
    assert cfg.motion_config == world.MOTION
    d = cfg.train_data
    assert (d.source, d.style, d.sample_size, d.sample_n_frames) == ("procedural", "plain", world.SIZE, world.FRAMES)
    assert cfg.export_formats == ("diffusers",)   # keeps heads and groups; needs no torch
    assert cfg.max_train_steps in cfg.validation_steps_tuple   # sampled when training ends
    assert cfg.checkpointing_steps < cfg.max_train_steps       # a stopped run resumes short of the end


def test_choices_equal_their_homes():
    # The config keeps copies of names whose home modules import JAX (see config.py).
    assert config_lib.NOISE_SCHEDULES == tuple(sorted(schedules.PRESETS))
    assert config_lib.ATTENTION_IMPLS == attention.IMPLEMENTATIONS
    assert config_lib.MESH_AXES == sharding.AXES
    assert config_lib.STYLES == procedural.STYLES


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the training CLI in a fresh interpreter; it reports which heavy modules it imported."""
    code = textwrap.dedent(f"""
        import sys
        from animatediff_jax import train
        try:
            rc = train.main({list(args)!r})
        except SystemExit as e:
            rc = e.code
        heavy = sorted(m for m in ("jax", "flax", "orbax", "tensorboardX", "numpy", "torch") if m in sys.modules)
        print("imported:", ",".join(heavy))
        sys.exit(rc)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_and_config_errors_answer_without_importing_jax(tmp_path):
    done = _cli("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m animatediff_jax.train ")
    assert "imported: \n" in done.stdout, done.stdout[-300:]
    assert "(default" not in done.stdout

    done = _cli("--workdir", str(tmp_path / "run"), "tokenizer_path=.", "export_formats=[original, difusers]")
    assert done.returncode == 2 and "imported: \n" in done.stdout
    assert done.stderr == ("error: export_formats[1]: must be one of original, diffusers; "
                           "got 'difusers'\n"), done.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_tensorboard_writer_is_named_at_start_up(tmp_path, monkeypatch, capsys):
    assert metrics.SummaryWriter.__module__.startswith("tensorboardX") and "tensorboardX" in train.RUN_REQUIREMENTS
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    assert train.main(["--workdir", str(tmp_path / "run"), "tokenizer_path=."]) == 1
    assert capsys.readouterr().err == ("error: tensorboardX: not installed, but needed for the TensorBoard writer of "
                                       "the training metrics (pip install tensorboardX)\n")
    assert not (tmp_path / "run").exists()
