"""An SD1.x base model (UNet, VAE, CLIP text encoder) from any of its PyTorch forms -> Flax params.

Sources: a diffusers folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`, weights as
`.safetensors` or `.bin`, whole or sharded, plain or in a variant such as fp16: every layout
`convert.sources.weights_file` reads; VAE attention also under older diffusers' names,
`ldm.vae_key_from_old_diffusers`), a hub id of one (resolved through the Hugging Face cache,
`convert.sources.resolve_source`, offline too), or
an LDM single file (`.safetensors` / `.ckpt`, optional `"state_dict"` wrapper, optional EMA weights),
whose configs are inferred from tensor shapes (SD1.5 layout rules; head counts, which shapes cannot
show, follow SD1.x: 8 UNet heads, CLIP head dim 64 — override with `overrides`).

Everything is planned from names and shapes first (`plan_base`): each Flax leaf is a view of its
source tensor in the memory-mapped file. `load_base` returns those views (zero-copy; or puts them on
a device leaf by leaf); `convert_base` streams them into one `.safetensors` per network, so peak
memory is one tensor. Both check the plan against the Flax networks' own parameter shapes before
any data is used: missing, unexpected and mis-shaped keys are errors naming the file.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax
import numpy as np

from animatediff_jax.checkpoint import incomplete_converted_folder, load_config, params_metadata, store_dtype
from animatediff_jax.text_files import read_text
from animatediff_jax.models.configs import CLIPTextConfig, UNetConfig, VAEConfig, to_dict
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.outputs import atomic_folder
from animatediff_jax.params import flax_path_to_torch, torch_key_to_flax, unflatten
from animatediff_jax.progress import progress_bar
from animatediff_jax.safetensors_file import SafetensorsFile, is_floating, write_safetensors
from animatediff_jax.schedules import PRESETS
from convert import ldm
from convert.detect import require_sd1
from convert.io import CheckpointError, StateDict, examples, open_state_dict
from convert.naming import flax_tensor_to_torch, torch_tensor_to_flax
from animatediff_jax.param_shapes import flax_param_shapes
from convert.sources import DIFFUSERS_WEIGHTS, SD_COMPONENTS, resolve_source, weights_file, weights_variant

NETWORKS = tuple(SD_COMPONENTS)  # unet, vae, text_encoder
CONFIG_CLASSES = {"unet": UNetConfig, "vae": VAEConfig, "text_encoder": CLIPTextConfig}
# SD1.x's v1-inference.yaml noise schedule, for single files (a diffusers folder brings its own).
SD1_SCHEDULER = {"_class_name": "DDIMScheduler", **PRESETS["A"], "prediction_type": "epsilon",
                 "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
_FOLDER_SKIP = ("text_model.embeddings.position_ids",)


@dataclass(frozen=True)
class Leaf:
    """One Flax parameter: its shape/dtype in Flax layout and how to make it from the source tensor:
    `view()` is the Flax-layout array as a reshape/transpose *view* of the source file's tensor
    (`source.view(source_key)`: memory-mapped, zero-copy), never a copy."""
    shape: tuple[int, ...]
    dtype: np.dtype
    view: Callable[[], np.ndarray]
    source_key: str
    source: StateDict

    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class NetworkPlan:
    name: str
    config: Any
    leaves: dict[tuple[str, ...], Leaf]
    path: str  # the file the tensors come from

    def nbytes(self) -> int:
        return sum(leaf.nbytes() for leaf in self.leaves.values())


@dataclass
class BasePlan:
    networks: dict[str, NetworkPlan]
    tokenizer_path: str | None
    scheduler_config: dict
    source_format: str
    files: list[StateDict]

    @property
    def variants(self) -> frozenset:
        """The weight variants (None: plain) of a diffusers folder's weights files read (`weights_file`'s
        choices); none for a single file."""
        return frozenset(weights_variant(f.path) for f in self.files) if self.source_format.startswith(
            "diffusers") else frozenset()

    def close(self):
        for f in self.files:
            f.close()


@dataclass
class BaseModel:
    """Flax params (numpy leaves) and configs of an SD1.x base model."""
    unet: dict
    vae: dict
    text_encoder: dict
    unet_config: UNetConfig
    vae_config: VAEConfig
    text_config: CLIPTextConfig
    tokenizer_path: str | None
    scheduler_config: dict
    source_format: str


# ----------------------------------------------------------------------------- configs from shapes

def _count(keys, pattern_prefix: str) -> int:
    """Number of distinct integers i in keys starting `pattern_prefix{i}.`."""
    n = len(pattern_prefix)
    return len({k[n:].split(".")[0] for k in keys if k.startswith(pattern_prefix) and k[n:].split(".")[0].isdigit()})


def infer_unet_config(shapes: Mapping[str, tuple[int, ...]], path: str = "") -> UNetConfig:
    """UNetConfig of a diffusers-named SD1.x UNet state dict, from its shapes."""
    keys = list(shapes)
    try:
        levels = _count(keys, "down_blocks.")
        attn_down = tuple(any(k.startswith(f"down_blocks.{i}.attentions.") for k in keys) for i in range(levels))
        attn_up = tuple(any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys) for i in range(levels))
        if any(".transformer_blocks.1." in k for k in keys):
            raise CheckpointError(f"{path}: UNet with more than one transformer block per attention (not SD1.x)")
        to_k = next(k for k in keys if k.endswith("attn2.to_k.weight"))
        proj_in = next(k for k in keys if k.endswith("attentions.0.proj_in.weight"))
        return UNetConfig(
            in_channels=shapes["conv_in.weight"][1], out_channels=shapes["conv_out.weight"][0],
            block_out_channels=tuple(shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(levels)),
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn_down),
            up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attn_up),
            layers_per_block=_count(keys, "down_blocks.0.resnets."),
            cross_attention_dim=shapes[to_k][1], use_linear_projection=len(shapes[proj_in]) == 2)
    except (KeyError, StopIteration) as e:
        raise CheckpointError(f"{path}: cannot infer the UNet config: missing {e}") from None
    except IndexError:  # a tensor of the wrong rank
        raise CheckpointError(f"{path}: cannot infer the UNet config: a key tensor has the wrong number of "
                              "dimensions") from None


def infer_vae_config(shapes: Mapping[str, tuple[int, ...]], path: str = "") -> VAEConfig:
    keys = list(shapes)
    try:
        levels = _count(keys, "encoder.down_blocks.")
        return VAEConfig(
            in_channels=shapes["encoder.conv_in.weight"][1], out_channels=shapes["decoder.conv_out.weight"][0],
            latent_channels=shapes["post_quant_conv.weight"][0],
            block_out_channels=tuple(shapes[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"][0]
                                     for i in range(levels)),
            down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
            layers_per_block=_count(keys, "encoder.down_blocks.0.resnets."))
    except KeyError as e:
        raise CheckpointError(f"{path}: cannot infer the VAE config: missing {e}") from None
    except IndexError:  # a tensor of the wrong rank
        raise CheckpointError(f"{path}: cannot infer the VAE config: a key tensor has the wrong number of "
                              "dimensions") from None


def infer_text_config(shapes: Mapping[str, tuple[int, ...]], path: str = "") -> CLIPTextConfig:
    try:
        vocab, hidden = shapes["text_model.embeddings.token_embedding.weight"]
        return CLIPTextConfig(
            vocab_size=vocab, hidden_size=hidden, num_attention_heads=max(hidden // 64, 1),
            max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
            num_hidden_layers=_count(list(shapes), "text_model.encoder.layers."),
            intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0])
    except KeyError as e:
        raise CheckpointError(f"{path}: cannot infer the text-encoder config: missing {e}") from None
    except (ValueError, IndexError):  # a tensor of the wrong rank
        raise CheckpointError(f"{path}: cannot infer the text-encoder config: a key tensor has the wrong number "
                              "of dimensions") from None


INFER = {"unet": infer_unet_config, "vae": infer_vae_config, "text_encoder": infer_text_config}


# ----------------------------------------------------------------------------- expected params

def check_plan(plan: NetworkPlan) -> None:
    """Raise if the plan's leaves are not exactly our network's params (names and shapes)."""
    try:
        want = flax_param_shapes(plan.name, plan.config)
    except ValueError as e:  # e.g. channels that the (unseen, default) GroupNorm groups do not divide
        raise CheckpointError(f"{plan.path}: the {plan.name} inferred from its tensor shapes cannot be built "
                              f"({e}); a single file does not show norm groups or heads, SD1.x's are assumed") from None
    check_leaves(plan.leaves, want, plan.path,
                 f"the {plan.name} does not match an SD1.x {plan.name} with config {plan.config}")


def check_leaves(have: Mapping[tuple[str, ...], Leaf], want: Mapping[tuple[str, ...], tuple[int, ...]],
                 path: str, what: str) -> None:
    """Raise `CheckpointError` "<path>: <what>: N missing (...); N unexpected (...); N with the wrong
    shape; N not floating point" unless the leaves are exactly the params `want` (Flax path -> shape),
    each a float (an integer weight is a damaged or quantised file; converted as is, it was stored as an
    integer param)."""
    missing = [("/".join(p)) for p in want if p not in have]
    unexpected = [have[p].source_key for p in have if p not in want]
    wrong = [f"{have[p].source_key} {have[p].shape} (expected {want[p]})"
             for p in have if p in want and tuple(have[p].shape) != want[p]]
    integer = [f"{leaf.source_key} ({leaf.dtype})" for leaf in have.values() if not is_floating(leaf.dtype)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({examples(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape (Flax layout): {examples(wrong, 3)}")
    if integer:
        problems.append(f"{len(integer)} not floating point: {examples(integer, 3)}")
    if problems:
        raise CheckpointError(f"{path}: {what}: " + "; ".join(problems))


# ----------------------------------------------------------------------------- planning

def _identity(a: np.ndarray) -> np.ndarray:
    return a


def flax_leaf(key: str, shape: tuple[int, ...], sd: StateDict, source_key: str,
              transform: Callable[[np.ndarray], np.ndarray]) -> tuple[tuple[str, ...], Leaf]:
    path = torch_key_to_flax(key, len(shape))
    flax_shape = torch_tensor_to_flax(path, np.broadcast_to(np.zeros((), np.int8), shape)).shape
    return path, Leaf(tuple(flax_shape), np.dtype(sd.dtype(source_key)),
                      lambda: torch_tensor_to_flax(path, transform(sd.view(source_key))), source_key, sd)


def _network_plan(name: str, sd: StateDict, entries: Mapping[str, tuple[str, tuple[int, ...], Callable]],
                  overrides: Mapping[str, Any] | None, config=None) -> NetworkPlan:
    """entries: diffusers key -> (source key, diffusers shape, diffusers-layout transform of the
    source tensor (a view))."""
    if config is None:
        config = INFER[name]({k: s for k, (_, s, _) in entries.items()}, sd.path)
    if overrides:
        try:
            config = dataclasses.replace(config, **overrides)
        except TypeError as e:
            raise CheckpointError(f"{sd.path}: bad {name} config override {dict(overrides)}: {e}") from None
    leaves = dict(flax_leaf(k, shape, sd, src, transform) for k, (src, shape, transform) in entries.items())
    return NetworkPlan(name, config, leaves, sd.path)


def _plan_single_file(path: str, ema: bool, overrides) -> BasePlan:
    sd = open_state_dict(path)
    try:
        keys = list(sd)
        require_sd1(keys, sd.shape, path)
        try:
            by_net, unexpected = ldm.plan_ldm(keys, sd.shape, ema=ema)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: {e.args[0] if e.args else e}") from None
        if unexpected:
            raise CheckpointError(f"{path}: {len(unexpected)} unexpected keys in an SD1.x single file: "
                                  f"{examples(unexpected)}")
        missing = [n for n in NETWORKS if n not in by_net]
        if missing:
            raise CheckpointError(f"{path}: no {', '.join(missing)} weights in this single file "
                                  f"(expected keys under {', '.join(ldm.PREFIXES[n] for n in missing)})")
        nets = {}
        for name, sources in by_net.items():
            entries = {d: (s.key, s.shape, s.transform) for d, s in sources.items()}
            nets[name] = _network_plan(name, sd, entries, (overrides or {}).get(name))
        fmt = "ldm-safetensors" if path.lower().endswith(".safetensors") else "ldm-ckpt"
        return BasePlan(nets, None, dict(SD1_SCHEDULER), fmt + ("-ema" if ema else ""), [sd])
    except BaseException:
        sd.close()
        raise


def _plan_folder(folder: str, variant: str | None, overrides) -> BasePlan:
    nets, files = {}, []
    try:
        for name in NETWORKS:
            sub = os.path.join(folder, name)
            cfg_path = os.path.join(sub, "config.json")
            if not os.path.isfile(cfg_path):
                problem = incomplete_converted_folder(folder) or f"not a diffusers SD folder: {cfg_path} is missing"
                raise CheckpointError(f"{folder}: {problem}")
            try:
                config = CONFIG_CLASSES[name].from_dict(json.loads(read_text(cfg_path)))
            except (ValueError, TypeError) as e:  # not UTF-8 text, not JSON, a value not of its field's type
                raise CheckpointError(f"{cfg_path}: unusable config ({e})") from None
            sd = open_state_dict(weights_file(sub, SD_COMPONENTS[name], variant))
            files.append(sd)
            entries = {}
            rename = {"text_encoder": ldm.text_key_to_diffusers, "vae": ldm.vae_key_from_old_diffusers}.get(name, str)
            for k in sd:
                d = rename(k)
                if d in _FOLDER_SKIP:
                    continue
                if d in entries:
                    raise CheckpointError(f"{sd.path}: holds both {entries[d][0]!r} and {k!r} (old and new names "
                                          f"of {d!r})")
                entries[d] = (k, sd.shape(k), _identity)
            if name != "vae":
                require_sd1(list(entries), lambda d, e=entries: e[d][1], sd.path)
            nets[name] = _network_plan(name, sd, entries, (overrides or {}).get(name), config)
        sched = os.path.join(folder, "scheduler", "scheduler_config.json")
        try:
            scheduler = json.loads(read_text(sched)) if os.path.isfile(sched) else dict(SD1_SCHEDULER)
        except ValueError as e:  # not UTF-8 text, not JSON
            raise CheckpointError(f"{sched}: unusable scheduler config ({e})") from None
        tok = os.path.join(folder, "tokenizer")
        fmt = "diffusers-" + ("safetensors" if ".safetensors" in os.path.basename(files[0].path) else "bin")
        return BasePlan(nets, tok if os.path.isdir(tok) else None, scheduler, fmt, files)
    except BaseException:
        for f in files:
            f.close()
        raise


def plan_base(source: str, *, ema: bool = False, variant: str | None = None, revision: str | None = None,
              overrides: Mapping[str, Mapping[str, Any]] | None = None, check: bool = True) -> BasePlan:
    """Plan the conversion of a folder, hub id or single file (no tensor data read yet)."""
    path = resolve_source(os.fspath(source), revision, variant=variant)
    if os.path.isdir(path):
        if ema:
            raise CheckpointError(f"{path}: EMA selection applies to single files; a diffusers folder holds one set")
        plan = _plan_folder(path, variant, overrides)
    else:
        plan = _plan_single_file(path, ema, overrides)
    if check:
        try:
            for net in plan.networks.values():
                check_plan(net)
        except BaseException:
            plan.close()
            raise
    return plan


# ----------------------------------------------------------------------------- load / convert

def _progress(plan: BasePlan, desc: str | None):
    """The bar (bytes of all networks) of a pass over `plan`'s leaves, labelled `desc`; None shows none."""
    return progress_bar(desc or "", total=sum(n.nbytes() for n in plan.networks.values()), enabled=desc is not None,
                        unit="B", unit_scale=True)


def _view_leaves(plan: BasePlan, dtype: str | None, bar, contiguous: bool = False):
    """Yield (network, path, Flax-layout array) for every leaf: zero-copy views of the source file
    (memory-mapped safetensors, or torch's mmap of a zip .ckpt/.bin) with kernels transposed as
    views. A cast to `dtype` (or, with `contiguous`, a transposed kernel) costs one pass (`astype`,
    transpose and cast together), after which the leaf's source pages are released. `bar`: the
    consumer's `_progress`, advanced by each leaf's bytes."""
    for name, net in plan.networks.items():
        for p, leaf in net.leaves.items():
            a = leaf.view()
            target = store_dtype(dtype, leaf.dtype)
            if a.dtype != target or (contiguous and not a.flags.c_contiguous):
                a = a.astype(target, order="C" if contiguous else "K")
                leaf.source.release(leaf.source_key)  # the copy holds the bytes now
            bar.update(leaf.nbytes())
            yield name, p, a


def _stream_leaves(plan: BasePlan, dtype: str | None, bar):
    """`_view_leaves` as C-contiguous arrays, for writing to disk; each leaf's source pages are
    released once the consumer has taken it (and asks for the next), so resident memory stays near
    one leaf rather than growing with every mapped page the conversion touched."""
    sources = {(name, p): leaf for name, net in plan.networks.items() for p, leaf in net.leaves.items()}
    for name, p, a in _view_leaves(plan, dtype, bar, contiguous=True):
        yield name, p, a
        sources[name, p].source.release(sources[name, p].source_key)


def _device_leaves(plan: BasePlan, dtype: str | None, bar, device):
    """`_view_leaves` put on `device` one by one (the single copy, transposes included); the source
    pages each leaf touched are released once it is on the device, so host memory stays at about
    one leaf plus what the device aliases (the CPU backend may alias aligned contiguous views)."""
    leaves = {(name, p): leaf for name, net in plan.networks.items() for p, leaf in net.leaves.items()}
    for name, p, a in _view_leaves(plan, dtype, bar):
        target = device(p, a.shape) if callable(device) else (None if device is True else device)
        x = jax.device_put(a, target)
        x.block_until_ready()
        leaves[name, p].source.release(leaves[name, p].source_key)
        yield name, p, x


def load_base(source: str, *, ema: bool = False, dtype: str | None = None, variant: str | None = None,
              revision: str | None = None, overrides=None, progress: bool = True, device=None) -> BaseModel:
    """Flax params + configs of an SD1.x base model. `dtype` ("float32", "bfloat16", "float16") casts
    floating params; None keeps the file's dtype.

    Zero-copy: with the file's dtype, leaves are read-only numpy views of the memory-mapped file
    (Linear/conv kernels are transposed views, not C-contiguous), so building the tree reads no
    data; pages load on first touch. The one copy happens in `jax.device_put` (which also does the
    transposes); the file must stay in place while the arrays live. Pickle files (.ckpt/.bin) are
    views of torch's mmap where the file is a zip archive. A cast (`dtype`) costs one pass.

    `device`: None keeps numpy views; True (default device), a `jax.Device`/`Sharding`, or a
    function `(flax path, shape) -> Sharding` returns jax arrays, put leaf by leaf (see `_device_leaves`).
    When the load touches the data (a `dtype` cast or a device put), NaN/Inf tensors are named in one
    warning on stderr (`nonfinite.py`)."""
    plan = plan_base(source, ema=ema, variant=variant, revision=revision, overrides=overrides)
    try:
        flat: dict[str, dict] = {name: {} for name in plan.networks}
        nonfinite = NonFinite(os.fspath(source), allow=True)  # a loader warns (convert's writers refuse)
        touched = dtype is not None or device is not None  # zero-copy views stay unread
        with _progress(plan, "loading" if progress else None) as bar:
            leaves = _view_leaves(plan, dtype, bar) if device is None else _device_leaves(plan, dtype, bar, device)
            for name, p, a in leaves:
                flat[name][p] = nonfinite.check(f"{name}/{'/'.join(p)}", a) if touched else a
        nonfinite.report()
    finally:
        plan.close()
    params = {name: unflatten(f) for name, f in flat.items()}
    n = plan.networks
    return BaseModel(params["unet"], params["vae"], params["text_encoder"], n["unet"].config, n["vae"].config,
                     n["text_encoder"].config, plan.tokenizer_path, plan.scheduler_config, plan.source_format)


def convert_base(source: str, out_dir: str, *, ema: bool = False, dtype: str | None = None,
                 variant: str | None = None, revision: str | None = None, overrides=None,
                 progress: bool = True, allow_nonfinite: bool = False, plan: BasePlan | None = None
                 ) -> dict[str, str]:
    """Stream an SD1.x base model into `out_dir/{unet,vae,text_encoder}.safetensors` (Flax params,
    config in the metadata), `scheduler_config.json` and, for a folder, a copy of `tokenizer/`.
    Returns {name: path}. The folder is written as a temporary sibling and swapped in whole
    (`outputs.atomic_folder`): an existing `out_dir` is replaced only once the new one is complete.
    Source tensors holding NaN/Inf are refused by name (`InputError`, nothing written) unless
    `allow_nonfinite` (then a warning names them). `plan`: the checked `plan_base` of `source` when the
    caller has it already (it is consumed; the planning arguments are then unused)."""
    plan = plan or plan_base(source, ema=ema, variant=variant, revision=revision, overrides=overrides)
    final = {name: os.path.join(out_dir, f"{name}.safetensors") for name in plan.networks}
    final["scheduler"] = os.path.join(out_dir, "scheduler_config.json")
    if plan.tokenizer_path:
        final["tokenizer"] = os.path.join(out_dir, "tokenizer")
    nonfinite = NonFinite(os.fspath(source), allow=allow_nonfinite)
    single_file = plan.source_format.startswith("ldm")  # else name tensors by network: 'unet/conv_in.weight'
    stream = None
    try:
        with atomic_folder(out_dir) as tmp_dir, _progress(plan, "converting" if progress else None) as bar:
            stream = _stream_leaves(plan, dtype, bar)
            for name, net in plan.networks.items():
                specs = {"/".join(p): (l.shape, store_dtype(dtype, l.dtype)) for p, l in net.leaves.items()}
                label = "" if single_file else f"{name}/"
                tensors = (("/".join(p), nonfinite.check(label + net.leaves[p].source_key, a))
                           for _, p, a in itertools.islice(stream, len(specs)))
                write_safetensors(os.path.join(tmp_dir, f"{name}.safetensors"), specs, tensors, params_metadata(
                    net.config, f"{plan.source_format}:{os.path.abspath(net.path)}", dtype))
            nonfinite.report()
            with open(os.path.join(tmp_dir, "scheduler_config.json"), "w") as f:
                json.dump(plan.scheduler_config, f, indent=2)
            if plan.tokenizer_path:
                shutil.copytree(plan.tokenizer_path, os.path.join(tmp_dir, "tokenizer"))
    finally:
        if stream is not None:
            stream.close()
        plan.close()
    return final


# ----------------------------------------------------------------------------- export

def export_unet_diffusers(params_path: str, out_dir: str, *, dtype: str | None = None,
                          allow_nonfinite: bool = False) -> str:
    """A stored Flax UNet (`unet.safetensors` from `convert_base`, or a trained one) -> a diffusers
    `UNet2DConditionModel` folder (`config.json` + `diffusion_pytorch_model.safetensors`). Motion-module
    subtrees, if any, are left out (they export separately as a motion module). Written to a temporary
    sibling folder and swapped in whole (`outputs.atomic_folder`). NaN/Inf tensors (also from a cast to
    `dtype`) are refused by name unless `allow_nonfinite` (then a warning)."""
    nonfinite = NonFinite(params_path, allow=allow_nonfinite)
    with SafetensorsFile(params_path) as source:
        config = load_config(source.metadata, params_path)
        if not isinstance(config, UNetConfig):
            raise CheckpointError(f"{params_path}: not a stored UNet (metadata config_class "
                                  f"{source.metadata.get('config_class')!r}, expected 'UNetConfig')")
        names = [n for n in source.entries if not any(part.startswith("motion_modules") for part in n.split("/"))]
        specs = {}
        for n in names:
            path = tuple(n.split("/"))
            torch_shape = flax_tensor_to_torch(path, np.broadcast_to(np.zeros((), np.int8), source.shape(n))).shape
            specs[flax_path_to_torch(path)] = (n, tuple(torch_shape), store_dtype(dtype, source.dtype(n)))

        def tensors():
            for key, (n, _, dt) in specs.items():
                a = flax_tensor_to_torch(tuple(n.split("/")), source.read(n))
                with np.errstate(over="ignore", invalid="ignore"):  # an overflow to Inf is named below
                    a = np.ascontiguousarray(a).astype(dt, copy=False)
                yield key, nonfinite.check(n, a)
            nonfinite.report()  # before write_safetensors renames the file into place

        with atomic_folder(out_dir) as tmp:
            write_safetensors(os.path.join(tmp, DIFFUSERS_WEIGHTS),
                              {k: (s, dt) for k, (_, s, dt) in specs.items()}, tensors(), {"format": "pt"})
            cfg = {"_class_name": "UNet2DConditionModel", **to_dict(config)}
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
    return out_dir
