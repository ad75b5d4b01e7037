"""Training configuration: typed, frozen, checked entirely when it is loaded.

    cfg = load_config("configs/training/training.yaml", ["train_batch_size=8", "mesh.fsdp=4"])
    cfg.learning_rate, cfg.train_data.sample_size, cfg.mesh.fsdp

The YAML files (configs/training/*.yaml) mirror the original AnimateDiff training configs. Each
section is a frozen dataclass below; every field says its meaning, unit and allowed values. Sources,
later winning: the defaults here <- the YAML file <- `dotted.key=value` overrides (the value read as
YAML: `1e-4`, `[a, b]`, `null`). A key that no dataclass has is an error, not a silent default.

Values are coerced by the field's declared type, not by what YAML guesses: YAML 1.1 reads `1e-4` and
`1e30` as strings, which a float field parses as numbers; an override of a text field keeps its text
(`pretrained_model_path=2024` is the folder "2024"). Anything that does not parse, lies outside the
field's range, is not finite, names an unknown choice, or contradicts another key is a `UsageError`
naming the dotted key (a missing file named by a path key is an `InputError`). All of it happens
here, before jax is imported or anything compiles: this module needs only the standard library,
PyYAML and the model-config dataclasses (`models/configs.py`, standard library only). The generic
part (merging, coercion, ranges) is `training/typed_config.py`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import yaml

from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.host_port import split_host_port
from animatediff_jax.hub_ids import is_hub_id
from animatediff_jax.models.configs import (MOTION_VERSIONS, SHAPE_FIELDS, CLIPTextConfig, MotionConfig, UNetConfig,
                                            VAEConfig)
from animatediff_jax.scale_limits import GUIDANCE
from animatediff_jax.training.typed_config import bounded, build, field_type, merge, wants_text
from animatediff_jax.yaml_file import read_yaml_mapping, yaml_problem

# Choices whose home module imports jax (too slow to import for checking a config): the same names,
# kept equal to their homes by tests/training/test_training_config.py.
NOISE_SCHEDULES = ("A", "B", "C")                    # schedules.PRESETS
ATTENTION_IMPLS = ("auto", "xla", "chunked", "cudnn", "tpu_flash")  # models/attention.IMPLEMENTATIONS
MESH_AXES = ("data", "fsdp", "tensor")               # sharding.AXES
STYLES = ("plain", "stripes", "dots", "checker")     # data/procedural.STYLES (numpy-bound)
# Choices that live here (their users import them from this module).
PREDICTION_TYPES = ("epsilon", "v_prediction")
LR_SCHEDULERS = ("constant", "cosine", "linear")
EXPORT_FORMATS = ("original", "diffusers")
LORA_TARGETS = ("motion", "unet")
MOTION_MODULE_VERSIONS = tuple(MOTION_VERSIONS)
# The file a LoRA is exported to, by `lora.targets`: default name and allowed suffixes.
LORA_FILES = {"motion": ("motion_lora.ckpt", (".ckpt", ".pt", ".pth", ".safetensors")),
              "unet": ("lora.safetensors", (".safetensors",))}


# ===================================== sections =================================================
@dataclass(frozen=True)
class TrainData:
    """`train_data`: where the training clips come from (data/train_input.py)."""
    source: Literal["procedural", "tfds"] = "procedural"
    """procedural (the built-in synthetic world) | tfds (a built TFDS dataset directory)."""
    dataset_dir: str | None = None
    """tfds: the built dataset directory (video clips or pre-computed latents); required with tfds."""
    num_clips: int = bounded(100000, ge=1)
    """procedural: dataset size in clips, >= 1."""
    seed: int = bounded(0, ge=0)
    """Shuffle (and procedural world) seed, >= 0."""
    style: Literal[STYLES] = "plain"
    """procedural: texture of the shapes, one of STYLES."""
    sample_size: int = bounded(256, ge=8)
    """Frame height = width in pixels, >= 8 (a multiple of the VAE's downsampling factor)."""
    sample_n_frames: int = bounded(16, ge=1)
    """Frames per clip, >= 1 (image_finetune trains on single frames regardless)."""


@dataclass(frozen=True)
class LoraSettings:
    """`lora`: LoRA / MotionLoRA training of low-rank factors (W + alpha/rank · up @ down) on the
    attention projections, the whole UNet frozen (training/lora.py)."""
    rank: int = bounded(0, ge=0)
    """Rank of the factors; 0 = off (train `trainable_modules` instead)."""
    alpha: float | None = bounded(None, gt=0)
    """Scale numerator (> 0); null = rank (scale 1)."""
    targets: Literal[LORA_TARGETS] = "motion"
    """motion: the motion modules' projections (MotionLoRA, needs motion_module_path) | unet: spatial attn1/attn2."""
    file: str | None = None
    """Export file name under --workdir; null = motion_lora.ckpt (motion) | lora.safetensors (unet, kohya)."""


@dataclass(frozen=True)
class MeshSizes:
    """`mesh`: device-mesh axis sizes; -1 = fill with the remaining devices (at most one -1)."""
    data: int = bounded(-1, ge=-1)
    """Data-parallel axis size, >= 1 or -1."""
    fsdp: int = bounded(1, ge=-1)
    """Fully-sharded (params, optimizer state, batch) axis size, >= 1 or -1."""
    tensor: int = bounded(1, ge=-1)
    """Tensor-parallel axis size, >= 1 or -1."""


@dataclass(frozen=True)
class Distributed:
    """`distributed`: joining the other hosts of a multi-host run (jax.distributed)."""
    initialize: bool | Literal["auto"] = False
    """auto (or true): JAX detects the cluster (TPU pods, SLURM); false: one host unless the keys below are set."""
    coordinator_address: str | None = None
    """host:port of process 0's coordinator; give it with num_processes and process_id."""
    num_processes: int | None = bounded(None, ge=1)
    """Number of processes (hosts), >= 1."""
    process_id: int | None = bounded(None, ge=0)
    """This process's index, 0 <= process_id < num_processes."""

    @property
    def single_host(self) -> bool:
        """True when this config runs one process: no cluster detection and no explicit host keys."""
        return self.initialize is False and self.coordinator_address is None and self.num_processes is None


@dataclass(frozen=True)
class ValidationData:
    """`validation_data`: prompts sampled (DDIM over the training schedule) while training."""
    prompts: tuple[str, ...] = ()
    """The prompts; required when validation_steps or validation_steps_tuple asks for sampling."""
    num_inference_steps: int = bounded(25, ge=1)
    """DDIM steps, >= 1."""
    guidance_scale: float = bounded(8.0, ge=GUIDANCE[0], le=GUIDANCE[1])
    """Classifier-free guidance scale, in `scale_limits.GUIDANCE` (≤ 1 = no guidance)."""
    video_length: int | None = bounded(None, ge=1)
    """Frames, >= 1; null = train_data.sample_n_frames (1 with image_finetune)."""
    width: int | None = bounded(None, ge=8)
    """Pixels, a multiple of 8; null = train_data.sample_size."""
    height: int | None = bounded(None, ge=8)
    """Pixels, a multiple of 8; null = train_data.sample_size."""


@dataclass(frozen=True)
class TrainingConfig:
    """A whole training run (the top level of the YAML file)."""
    image_finetune: bool = False
    """Train the 2D UNet on single frames (no motion module), the original's first stage."""
    pretrained_model_path: str | None = None
    """Base model: a diffusers folder, a single SD1.x file or a converted folder (`python -m convert base`;
    the shipped miniature's animatediff_jax/assets/miniature/base); null = random init from the *_config sections."""
    tokenizer_path: str | None = None
    """CLIP tokenizer folder; null = <pretrained_model_path>/tokenizer."""
    unet_config: UNetConfig | None = None
    """Random base only: UNetConfig fields (models/configs.py); null = SD1.5's."""
    vae_config: VAEConfig | None = None
    """Random base only: VAEConfig fields; null = SD1.5's."""
    text_encoder_config: CLIPTextConfig | None = None
    """Random base only: CLIPTextConfig fields; null = SD1.5's."""
    motion_module_version: Literal[MOTION_MODULE_VERSIONS] = "v2"
    """v1 | v2 | v3: the MotionConfig preset of the motion module."""
    motion_module_kwargs: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}),
                                                    metadata={"fields_of": MotionConfig})
    """MotionConfig fields over the preset (e.g. max_seq_length: 8)."""
    motion_module_path: str | None = None
    """Start from this motion module (original .ckpt/.safetensors or MotionAdapter folder); null = fresh."""
    noise_schedule: Literal[NOISE_SCHEDULES] = "B"
    """The paper's schedules: A (scaled_linear) | B (linear 0.00085-0.012) | C (linear 0.0001-0.02)."""
    prediction_type: Literal[PREDICTION_TYPES] = "epsilon"
    """What the UNet predicts: epsilon | v_prediction."""
    train_data: TrainData = field(default_factory=TrainData)
    """The training clips (section)."""
    trainable_modules: tuple[str, ...] = ("motion_modules.",)
    """Regexes; a parameter trains when one is found in its name (unused with lora.rank > 0)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA / MotionLoRA (section)."""
    cfg_random_null_text_ratio: float = bounded(0.1, ge=0, le=1)
    """Probability in [0, 1] that a caption is replaced by the empty one (for classifier-free guidance)."""
    learning_rate: float = bounded(1.0e-4, gt=0, le=1)
    """Peak learning rate, in (0, 1]: AdamW moves each weight by about the rate every step, so above 1 training
    diverges at once (1e30 saved a step of 1e30 weights before stopping on NaN)."""
    lr_scheduler: Literal[LR_SCHEDULERS] = "constant"
    """After warmup: constant | cosine | linear (decay to 0 at max_train_steps)."""
    lr_warmup_steps: int = bounded(0, ge=0)
    """Linear warmup from 0, in optimizer steps, >= 0."""
    adam_beta1: float = bounded(0.9, ge=0, lt=1)
    """AdamW beta1 in [0, 1)."""
    adam_beta2: float = bounded(0.999, ge=0, lt=1)
    """AdamW beta2 in [0, 1)."""
    adam_weight_decay: float = bounded(1.0e-2, ge=0)
    """AdamW decoupled weight decay, >= 0."""
    adam_epsilon: float = bounded(1.0e-8, gt=0)
    """AdamW epsilon, > 0."""
    max_grad_norm: float = bounded(1.0, ge=0)
    """Global-norm gradient clipping threshold, >= 0 (0 = no clipping)."""
    train_batch_size: int = bounded(4, ge=1)
    """Global batch in clips (all hosts) per optimizer step, >= 1."""
    gradient_accumulation_steps: int = bounded(1, ge=1)
    """Micro-batches per step, >= 1, dividing train_batch_size."""
    gradient_checkpointing: bool = False
    """Rematerialise UNet blocks (nn.remat): less memory, more compute."""
    mixed_precision_training: bool = True
    """bfloat16 compute (float32 master weights); false = float32 throughout."""
    attention_impl: Literal[ATTENTION_IMPLS] = "auto"
    """Attention kernel: xla | chunked | cudnn."""
    max_train_steps: int = bounded(100, ge=1)
    """Optimizer steps of the whole run, >= 1."""
    checkpointing_steps: int = bounded(60, ge=1)
    """Save a checkpoint every N steps, >= 1 (and at the last step)."""
    checkpoints_total_limit: int | None = bounded(3, ge=0)
    """Keep the last K checkpoints; 0 or null = keep all."""
    log_every_steps: int = bounded(10, ge=1)
    """Print / log metrics every N steps, >= 1."""
    compilation_cache_dir: str | None = None
    """Persist compiled executables in this folder (restarts compile nothing); null = off."""
    global_seed: int = bounded(42, ge=0)
    """Seed of initialisation, noise and caption drops, >= 0."""
    mesh: MeshSizes = field(default_factory=MeshSizes)
    """Device mesh ('data', 'fsdp', 'tensor') (section)."""
    sharding_rules: tuple[tuple[str, tuple[Literal[MESH_AXES] | None, ...]], ...] = ()
    """[[regex, [axis | null, ...]], ...]: partition rules tried before the defaults (sharding.py)."""
    distributed: Distributed = field(default_factory=Distributed)
    """Multi-host set-up (section)."""
    export_formats: tuple[Literal[EXPORT_FORMATS], ...] = EXPORT_FORMATS
    """Motion-module files written at the end: original (motion_module.ckpt) and/or diffusers (motion_adapter/)."""
    validation_data: ValidationData = field(default_factory=ValidationData)
    """Validation sampling (section)."""
    validation_steps: int = bounded(0, ge=0)
    """Sample the validation prompts every N steps, >= 0; 0 = only at validation_steps_tuple."""
    validation_steps_tuple: tuple[int, ...] = bounded((), ge=1)
    """And at these steps (each >= 1; the original's [2, 50])."""

    # ----- derived values (pure, no I/O)
    @property
    def motion_config(self) -> MotionConfig | None:
        """The motion module's MotionConfig (preset + motion_module_kwargs); None with image_finetune."""
        if self.image_finetune:
            return None
        return MotionConfig(**{**vars(MOTION_VERSIONS[self.motion_module_version]), **self.motion_module_kwargs})

    @property
    def validating(self) -> bool:
        """Whether validation sampling is due at some step."""
        return self.validation_steps > 0 or bool(self.validation_steps_tuple)

    @property
    def lora_alpha(self) -> float:
        """LoRA alpha (rank when not given)."""
        return float(self.lora.rank if self.lora.alpha is None else self.lora.alpha)

    @property
    def lora_file(self) -> str:
        """The LoRA export's file name (under the workdir)."""
        return self.lora.file or LORA_FILES[self.lora.targets][0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict of every value (tuples as lists), as written to config.json."""
        return json.loads(json.dumps(_plain(self)))


# Keys that say how a run is carried out, not what it computes: changing them between a run and its
# resumption changes nothing a resumed run must warn about (`config_changes`).
HOW_NOT_WHAT = ("checkpointing_steps", "checkpoints_total_limit", "log_every_steps", "compilation_cache_dir",
                "attention_impl", "gradient_checkpointing", "mesh", "sharding_rules", "distributed",
                "export_formats", "validation_data", "validation_steps", "validation_steps_tuple")
# Keys of the learning-rate schedule (training/optimizer.learning_rate_schedule).
LR_SCHEDULE_KEYS = ("learning_rate", "lr_scheduler", "lr_warmup_steps", "max_train_steps")


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) for each value of `current` (a `to_dict()`) that differs
    from the `saved` run's and changes what the run computes (not a HOW_NOT_WHAT key), in key order."""
    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if prefix + k in HOW_NOT_WHAT:
                continue
            if isinstance(v, Mapping):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out
    old, new = flat(saved), flat(current)
    return [(k, old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


# Motion-module fields that leave the parameters' shapes alone but fix what they mean: trained weights of
# one setting are not weights of another (heads split the same projections otherwise, norms group otherwise).
MOTION_ARCHITECTURE = ("num_attention_heads", "norm_num_groups", "input_norm", "resnet_norm")


def trained_layout(config: Mapping[str, Any]) -> dict[str, Any]:
    """What fixes the tree and the shapes of the trained state (the trained parameters and their optimizer
    state), or what its weights mean, for a run of `config` (a `to_dict()`, keys it lacks taking their
    defaults): what trains (the `trainable_modules`, or the LoRA factors' rank and targets), the UNet's and
    the motion module's shape fields and the motion module's `MOTION_ARCHITECTURE`, image_finetune, and
    whether gradients are clipped (a clipping stage has its own state)."""
    d = _defaults_under(TrainingConfig().to_dict(), config)
    rank, targets = d["lora"]["rank"], d["lora"]["targets"]
    unet = {**_plain(UNetConfig()), **(d["unet_config"] or {})}
    layout = {"image_finetune": d["image_finetune"], "clipping": d["max_grad_norm"] > 0,
              "trains": ("lora", rank, targets) if rank else ("modules", d["trainable_modules"]),
              "unet": {f: unet[f] for f in SHAPE_FIELDS["unet"]}}
    if not d["image_finetune"] and not (rank and targets == "unet"):
        motion = {**vars(MOTION_VERSIONS[d["motion_module_version"]]), **d["motion_module_kwargs"]}
        layout["motion"] = {f: motion[f] for f in SHAPE_FIELDS["motion"] + MOTION_ARCHITECTURE}
    return layout


def layout_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The `config_changes` from the `saved` run's config to `current` (`to_dict()`s) that change the
    trained state's tree or shapes (`trained_layout`): each change that alone changes it, or (when only
    together they do) every change; [] when the layout is the same, so a checkpoint of `saved` restores."""
    before = trained_layout(saved)
    if before == trained_layout(current):
        return []
    changes = config_changes(saved, current)
    return [c for c in changes if trained_layout(_with(saved, c[0], c[2])) != before] or changes


def _defaults_under(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` with the keys it lacks taken from `defaults` (nested dicts merged)."""
    out = dict(defaults)
    for k, v in given.items():
        out[k] = _defaults_under(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _with(config: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `config` with the dotted `key` set to `value` (a section that is None made a dict)."""
    head, _, rest = key.partition(".")
    out = dict(config)
    out[head] = _with(out.get(head) or {}, rest, value) if rest else value
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# ===================================== loading ==================================================
def load_config(path: str | None = None, overrides: Sequence[str] = (), paths: bool = True) -> TrainingConfig:
    """Defaults <- YAML file `path` <- `dotted.key=value` overrides, checked; returns the config.
    `paths` False leaves out whether the path keys name something here (a launcher checks a config
    whose paths exist only on the hosts that train).

    Raises InputError (the file cannot be read or parsed, a path key names nothing) or UsageError
    (an unknown key, a value of the wrong type, out of range or contradicting another key), each
    message starting with the file or the dotted key.
    """
    raw: dict = {}
    if path:
        data = read_yaml_mapping(path, "training config")
        try:
            merge(raw, data, TrainingConfig, "")
        except UsageError as e:
            raise UsageError(f"{path}: {e}") from None
    for text in overrides:
        merge(raw, parse_override(text), TrainingConfig, "")
    cfg = build(TrainingConfig, raw, "")
    check(cfg, paths)
    return cfg


def parse_override(text: str) -> dict:
    """'a.b=1' -> {'a': {'b': 1}}: the value read as YAML, except that a text field keeps its text."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"{text}: a command-line override is dotted.key=value")
    text_field = wants_text(field_type(TrainingConfig, key.split(".")))
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        if not text_field:
            raise UsageError(f"{key}: value {value!r} is not valid YAML: {yaml_problem(e)}") from None
        parsed = value.strip()   # e.g. an IPv6 coordinator [::1]:1234, which YAML reads as a broken list
    if text_field and parsed is not None and not isinstance(parsed, str):
        parsed = value.strip()   # e.g. a folder named 2024, 0123 (YAML 1.1 octal), "host:" (a YAML mapping)
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return out


# ===================================== relations ================================================
def check(cfg: TrainingConfig, paths: bool = True) -> None:
    """The checks that involve several keys, the regexes and (`paths`) the paths (run by `load_config`)."""
    sizes = dataclasses.asdict(cfg.mesh)
    if 0 in sizes.values() or list(sizes.values()).count(-1) > 1:
        raise UsageError(f"mesh: sizes must be >= 1, with at most one -1 (fill), got {sizes}")
    if cfg.train_batch_size % cfg.gradient_accumulation_steps:
        raise UsageError(f"gradient_accumulation_steps: {cfg.gradient_accumulation_steps} does not divide "
                         f"train_batch_size {cfg.train_batch_size}")
    for i, pattern in enumerate(cfg.trainable_modules):
        _regex(pattern, f"trainable_modules[{i}]")
    for i, (pattern, _) in enumerate(cfg.sharding_rules):
        _regex(pattern, f"sharding_rules[{i}][0]")
    if len(set(cfg.export_formats)) != len(cfg.export_formats):
        raise UsageError(f"export_formats: a format is listed twice: {list(cfg.export_formats)}")

    given = [k for k in ("unet_config", "vae_config", "text_encoder_config") if getattr(cfg, k) is not None]
    if cfg.pretrained_model_path and given:
        raise UsageError(f"{given[0]}: describes a random base; with pretrained_model_path the network "
                         "configs come from the model itself")
    if not (cfg.tokenizer_path or cfg.pretrained_model_path):
        raise UsageError("pretrained_model_path: not set; name the base model (a diffusers folder, an SD1.x "
                         "file or a hub id), or set tokenizer_path to train on a random base")
    if cfg.image_finetune and cfg.motion_module_path:
        raise UsageError("motion_module_path: given with image_finetune: true (an image fine-tune has no "
                         "motion module)")
    if cfg.motion_config is not None and cfg.motion_config.max_seq_length < (
            1 if cfg.image_finetune else cfg.train_data.sample_n_frames):
        raise UsageError(f"train_data.sample_n_frames: {cfg.train_data.sample_n_frames} frames exceed the "
                         f"motion module's max_seq_length {cfg.motion_config.max_seq_length}")

    d = cfg.train_data
    if not cfg.pretrained_model_path:  # a base's VAE is checked once read (trainer.build_models)
        check_sample_size(d.sample_size, cfg.vae_config or VAEConfig())
    if d.source == "tfds" and not d.dataset_dir:
        raise UsageError("train_data.dataset_dir: train_data.source tfds needs a built TFDS dataset directory")
    if d.source == "procedural" and d.dataset_dir:
        raise UsageError(f"train_data.dataset_dir: {d.dataset_dir} is given, but train_data.source is procedural "
                         "(clips drawn in memory, no dataset read): add train_data.source=tfds to train on it, or "
                         "leave dataset_dir out")

    rank, targets = cfg.lora.rank, cfg.lora.targets
    if rank and targets == "motion" and (cfg.image_finetune or not cfg.motion_module_path):
        raise UsageError("lora.targets: motion (MotionLoRA) adapts an existing motion module: set "
                         "motion_module_path (with image_finetune: false)")
    suffixes = LORA_FILES[targets][1]
    if not cfg.lora_file.endswith(suffixes):
        raise UsageError(f"lora.file: {cfg.lora_file!r}: a {'MotionLoRA' if targets == 'motion' else 'kohya LoRA'} "
                         f"is written as {', '.join(suffixes)}")

    v = cfg.validation_data
    if cfg.validating and not v.prompts:
        raise UsageError("validation_data.prompts: empty, but validation_steps / validation_steps_tuple ask "
                         "for validation sampling")
    frames = 1 if cfg.image_finetune else (v.video_length or d.sample_n_frames)
    if cfg.validating and cfg.motion_config is not None and frames > cfg.motion_config.max_seq_length:
        raise UsageError(f"validation_data.video_length: {frames} frames exceed the motion module's "
                         f"max_seq_length {cfg.motion_config.max_seq_length}")
    for key, size in (("width", v.width), ("height", v.height)):
        if cfg.validating and (size or d.sample_size) % 8:
            given = f"validation_data.{key}: {size} pixels" if size else \
                f"train_data.sample_size: {d.sample_size} pixels, which validation_data.{key} (null) follows"
            raise UsageError(f"{given}; validation width and height must be multiples of 8")

    dist = cfg.distributed
    explicit = {"coordinator_address": dist.coordinator_address, "num_processes": dist.num_processes,
                "process_id": dist.process_id}
    if any(v is not None for v in explicit.values()):
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise UsageError(f"distributed.{missing[0]}: give coordinator_address, num_processes and "
                             "process_id together (or none of them, with initialize: auto)")
        split_host_port(dist.coordinator_address, "distributed.coordinator_address")
        if dist.process_id >= dist.num_processes:
            raise UsageError(f"distributed.process_id: {dist.process_id} is not below num_processes "
                             f"{dist.num_processes}")

    if not paths:
        return
    for key, path in (("pretrained_model_path", cfg.pretrained_model_path), ("tokenizer_path", cfg.tokenizer_path),
                      ("motion_module_path", cfg.motion_module_path), ("train_data.dataset_dir", d.dataset_dir)):
        if path and not os.path.exists(path) and not (key in HUB_KEYS and is_hub_id(path)):
            raise InputError(f"{key}: {path}: no such file or directory")


def validation_warning(cfg: TrainingConfig) -> str | None:
    """The warning line, said before training, that validation sampling is asked for but no step up to
    `max_train_steps` is due (e.g. the miniature's validation_steps_tuple [300] with max_train_steps=100);
    None when some step samples or none is asked for."""
    every, extra, last = cfg.validation_steps, cfg.validation_steps_tuple, cfg.max_train_steps
    if not cfg.validating or (0 < every <= last) or any(step <= last for step in extra):
        return None
    keys = ([f"validation_steps {every}"] if every else []) + ([f"validation_steps_tuple {list(extra)}"] if extra else [])
    return (f"warning: {' and '.join(keys)}: no step up to max_train_steps {last}, so this run writes no "
            f"validation samples (validation_steps_tuple=[{last}] samples at its end)")


def warmup_warning(cfg: TrainingConfig) -> str | None:
    """The warning line, said before training, that `lr_warmup_steps` outlasts `max_train_steps`, so the
    learning rate never reaches `learning_rate`; None otherwise."""
    if cfg.lr_warmup_steps <= cfg.max_train_steps:
        return None
    reached = (cfg.max_train_steps - 1) / cfg.lr_warmup_steps  # optax counts the first update as 0
    return (f"warning: lr_warmup_steps {cfg.lr_warmup_steps} exceeds max_train_steps {cfg.max_train_steps}: the "
            f"learning rate rises only to {reached:.0%} of learning_rate {cfg.learning_rate:g} by the last step")


# the model inputs that take a hub id (found in, or downloaded into, the Hugging Face cache by
# `train.located_models`) and the files a repository of each kind needs (`convert.sources.HUB_PATTERNS`)
HUB_KEYS = {"pretrained_model_path": "sd", "motion_module_path": "model"}


def check_sample_size(size: int, vae: VAEConfig) -> None:
    """UsageError unless `train_data.sample_size` is a multiple of the VAE's downsampling factor."""
    factor = vae.downsample_factor
    if size % factor:
        raise UsageError(f"train_data.sample_size: {size} pixels is not a multiple of {factor}, the VAE's "
                         "downsampling factor")


def _regex(pattern: str, key: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise UsageError(f"{key}: {pattern!r} is not a regular expression ({e})") from None
