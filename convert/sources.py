"""Where a model's weights are: a hub id resolved through the Hugging Face cache (`resolve_source`;
`recorded` keeps it as given where a run writes its inputs down; what it downloads of a repository:
`hub_files`, the one weights set per folder `weights_file` reads), and the weights file of a
diffusers / transformers model folder (`weights_file`).

Every loader of a model folder (`convert base`'s unet/, vae/, text_encoder/; MotionAdapter,
ControlNet and SparseCtrl folders) and `convert inspect` find its weights through `weights_file`,
which reads every layout `save_pretrained` writes (diffusers 0.42, transformers 5, huggingface_hub's
`save_torch_state_dict`), with the stem `diffusion_pytorch_model` (diffusers) or `model` /
`pytorch_model` (transformers):

    <stem>.safetensors / <stem>.bin                                   whole
    <stem>.safetensors.index.json (+ <stem>-00001-of-0000N.safetensors)  sharded
    <stem>.fp16.safetensors / <stem>.fp16.bin                         variant "fp16", whole
    <stem>.safetensors.index.fp16.json (+ <stem>.fp16-00001-of-0000N.safetensors)  variant, sharded
    <stem>.fp16.safetensors.index.json   (huggingface_hub's save_torch_state_dict)
    <stem>.safetensors.fp16.index.json   (older diffusers; diffusers still reads it)

The choice follows diffusers' `DiffusionPipeline.from_pretrained`: a named variant where the folder
has it, else the plain weights (a pipeline falls back so per component); without a variant, the plain
weights where present (a folder holding both loads as diffusers loads it), else the one variant the
folder holds (several: `VariantError`, the caller must name one). Within one variant: the first stem
with weights, `.safetensors` before `.bin`, a whole file before a shard index.
"""
from __future__ import annotations

import glob
import os
import posixpath
import re
import sys
from typing import Iterable

from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects

from animatediff_jax.hub_ids import VARIANT, is_hub_id
from animatediff_jax.tokenizer import TOKENIZER_FILES
from convert.io import CheckpointError

DIFFUSERS_STEMS = ("diffusion_pytorch_model",)
TRANSFORMERS_STEMS = ("model", "pytorch_model")
# the weights of an SD folder's components (diffusers' UNet and VAE, transformers' CLIP text model)
SD_COMPONENTS = {"unet": DIFFUSERS_STEMS, "vae": DIFFUSERS_STEMS, "text_encoder": TRANSFORMERS_STEMS}
FORMATS = ("safetensors", "bin")  # preferred first
DIFFUSERS_WEIGHTS = f"{DIFFUSERS_STEMS[0]}.safetensors"  # what the exporters write into a diffusers folder
# the files of each kind of repository a hub id downloads (`resolve_source`; of their weights, `hub_files`' choice)
HUB_PATTERNS = {"sd": ["unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*", "model_index.json"],
                "model": ["config.json", "diffusion_pytorch_model*", "controlnet/*"],  # MotionAdapter, ControlNet
                # LoRAs: PEFT adapters, diffusers' save_lora_weights, the hub's diffusers MotionLoRA repos
                "lora": ["adapter_config.json", "adapter_model*", "pytorch_lora_weights*", "diffusion_pytorch_model*"],
                # a CLIP tokenizer: a tokenizer repo's own files, or an SD repo's tokenizer/ (its files only)
                "tokenizer": [*TOKENIZER_FILES, *(f"tokenizer/{name}" for name in TOKENIZER_FILES)]}
HUB_IGNORE = ["*.msgpack", "*.onnx*", "*.ckpt", "*.h5"]  # Flax, ONNX, LDM single files, Keras: never read from a repo
# a stem or variant name: no dots, no hyphens (`model-00001-of-00002`, `fp16-00001-of-00002` are shards)
_WEIGHTS_NAME = re.compile(
    rf"(?P<stem>{VARIANT})(?:\.(?P<a>{VARIANT}))?\.(?P<ext>{'|'.join(FORMATS)})"
    rf"(?P<index>(?:\.(?P<b>{VARIANT}))?\.index(?:\.(?P<c>{VARIANT}))?\.json)?")


def warn_unused_variants(asked: Iterable[str | None], chosen: frozenset) -> None:
    """One `warning:` line per asked variant (None: none asked) that no weights file read was of
    (`chosen`: the `weights_variant` of each weights file the command read): the plain weights were
    used, as `weights_file` falls back to them silently (diffusers' from_pretrained warns likewise)."""
    for variant in sorted({v for v in asked if v is not None} - chosen):
        print(f"warning: --variant {variant}: no input read holds weights of that variant; the plain "
              "weights were used", file=sys.stderr)


class VariantError(CheckpointError):
    """`weights_file`'s refusal of a folder holding weights of several variants and no plain weights,
    none of them asked for, or none the one asked for. `problem` says so; the message adds how the
    commands choose one (`--variant`), which a caller without that flag replaces (`problem` + what it
    offers)."""

    def __init__(self, folder: str, variants: list[str], variant: str | None, stems: tuple[str, ...]):
        present = f"{', '.join(variants)} of {' / '.join(stems)}"
        if variant is None:
            self.problem = f"{folder}: no plain weights, only the variants {present}"
            super().__init__(f"{self.problem}: choose one (--variant)")
        else:
            self.problem = f"{folder}: no variant {variant!r} (--variant) and no plain weights; the variants there: {present}"
            super().__init__(f"{self.problem}: give --variant one of them")


class HubError(CheckpointError):
    """`resolve_source`'s refusal of a hub id that cannot be had, no such local path existing either.
    `problem` says why the id cannot be had (the message adds that no local path of the name exists),
    for a caller that looked for the path elsewhere too (prompt configs: beside the config)."""

    def __init__(self, source: str, problem: str):
        self.problem = problem
        super().__init__(f"{source}: no such local file or folder, and {problem}")


def parse_weights_name(name: str) -> tuple[str, str | None, str, bool] | None:
    """(stem, variant or None, "safetensors"/"bin", whether a shard index) of a weights file name in
    one of the layouts above; None for any other name (a shard, a config, a name with two variants)."""
    m = _WEIGHTS_NAME.fullmatch(name)
    variants = [] if m is None else [v for v in (m["a"], m["b"], m["c"]) if v is not None]
    if m is None or len(variants) > 1:
        return None
    return m["stem"], (variants or [None])[0], m["ext"], m["index"] is not None


def weights_file(folder: str, stems: tuple[str, ...] = DIFFUSERS_STEMS, variant: str | None = None) -> str:
    """The weights of a diffusers / transformers model folder: a single file, or the shard index of
    a sharded save (opened by `convert.io.open_state_dict` either way); choice as in the module
    docstring (`choose_weights`). `stems`: `DIFFUSERS_STEMS`, `TRANSFORMERS_STEMS` (`SD_COMPONENTS`
    per SD component).

    Raises CheckpointError naming the folder when it holds no weights file; VariantError when it
    holds only weights of several variants and `variant` names none of them."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    name = choose_weights([n for n in names if os.path.isfile(os.path.join(folder, n))], stems, variant,
                          as_given(folder))
    return os.path.join(folder, name)


def weights_variant(path: str) -> str | None:
    """The variant (None: plain weights) of a weights file `weights_file` chose."""
    return parse_weights_name(os.path.basename(path))[1]


def choose_weights(names: Iterable[str], stems: tuple[str, ...], variant: str | None, where: str) -> str:
    """The one of a folder's file `names` that `weights_file` reads (rules: the module docstring), a
    whole weights file or a shard index. Errors as `weights_file`'s, naming the folder `where`."""
    found = {}  # (variant, stem rank, format rank, index?) -> name
    for name in sorted(names):
        parsed = parse_weights_name(name)
        if parsed is not None and parsed[0] in stems:
            stem, v, ext, index = parsed
            found.setdefault((v, stems.index(stem), FORMATS.index(ext), index), name)
    plain = any(v is None for v, *_ in found)
    variants = sorted({v for v, *_ in found} - {None})
    if variant in variants:
        chosen = variant
    elif plain:  # no variant asked, or the asked one absent
        chosen = None
    elif variant is None and len(variants) == 1:
        chosen = variants[0]
    elif variants:
        raise VariantError(where, variants, variant, stems)
    else:
        raise CheckpointError(f"{where}: no weights file: expected {' or '.join(stems)}[.VARIANT]"
                              f".{{{','.join(FORMATS)}}}, or a shard index <name>.{{{','.join(FORMATS)}}}"
                              ".index[.VARIANT].json")
    return found[min(k for k in found if k[0] == chosen)]


def hub_files(repo: str, repo_files: Iterable[str], patterns: list[str], variant: str | None = None,
              weights: bool = True) -> list[str]:
    """The files of hub repository `repo` (`repo_files`: its listing) that `resolve_source` downloads:
    those `patterns` match (less `HUB_IGNORE`), of each folder's weights (its files named
    `<stem>.*` / `<stem>-*`, stems: `SD_COMPONENTS` for an SD component's folder, else
    `DIFFUSERS_STEMS`) only the set `weights_file` reads there for `variant` (`choose_weights`: one
    whole file, or a shard index and its shards), none where `weights` is False (configs only), all
    where none of them is one `weights_file` reads; of other files (a LoRA's), no X.bin beside an
    X.safetensors.
    VariantError naming the folder as `as_given` names it in the cache (`owner/name (unet/)`) where
    `weights_file` would refuse the folder's variants."""
    folders: dict[str, list[str]] = {}
    for path in filter_repo_objects(repo_files, allow_patterns=patterns, ignore_patterns=HUB_IGNORE):
        folders.setdefault(posixpath.dirname(path), []).append(posixpath.basename(path))
    out = []
    for folder, names in folders.items():
        stems = SD_COMPONENTS.get(posixpath.basename(folder), DIFFUSERS_STEMS)
        family = [n for n in names if n.startswith(tuple(f"{s}{sep}" for s in stems for sep in ".-"))]
        keep = [n for n in names if n not in family and not (weights and _has_safetensors_twin(n, names))]
        if weights and any(map(parse_weights_name, family)):
            chosen = choose_weights(family, stems, variant, hub_name(repo, folder))
            stem, v, ext, index = parse_weights_name(chosen)
            shard = re.compile(rf"{re.escape(stem + ('' if v is None else f'.{v}'))}-\d+-of-\d+\.{ext}")
            keep += [chosen, *(n for n in family if index and shard.fullmatch(n))]
        elif weights:  # none of them a weights file `weights_file` reads: all, as the patterns match them
            keep += family
        out += [posixpath.join(folder, n) for n in keep]
    return sorted(out)


def _has_safetensors_twin(name: str, names: list[str]) -> bool:
    """`name` is X.bin and X.safetensors is beside it: every loader here reads the latter (a LoRA's
    adapter_model / pytorch_lora_weights, like `weights_file`)."""
    return name.endswith(".bin") and name.removesuffix(".bin") + ".safetensors" in names


def as_given(folder: str) -> str:
    """`folder` named as the user gave it: one in a hub id's snapshot in the Hugging Face cache (what
    `resolve_source` made of the id) as `owner/name` (`owner/name (unet/)` for a subfolder), any
    other as it is."""
    parts = os.path.relpath(os.path.abspath(folder), os.path.abspath(constants.HF_HUB_CACHE)).split(os.sep)
    repo = parts[0].split("--")
    if len(parts) < 3 or parts[1] != "snapshots" or len(repo) != 3 or repo[0] != "models":
        return folder
    return hub_name(f"{repo[1]}/{repo[2]}", "/".join(parts[3:]))


def hub_name(repo: str, folder: str) -> str:
    """A folder of hub repository `repo` as the user knows it: `owner/name`, `owner/name (unet/)`."""
    return repo + (f" ({folder}/)" if folder else "")


def recorded(source: str) -> str:
    """A model input as a run records it to find it again: a local path made absolute; a hub id
    (written 'owner/name', no such path here) as given."""
    return source if not os.path.exists(source) and is_hub_id(source) else os.path.abspath(source)


def resolve_source(source: str, revision: str | None = None, allow_patterns: list[str] | None = None,
                   variant: str | None = None, weights: bool = True) -> str:
    """A local file or folder as given; otherwise a hub id, downloaded into (or, offline or when the
    hub cannot be reached, found in) the Hugging Face cache by `huggingface_hub.snapshot_download`:
    of the files `allow_patterns` match (default `HUB_PATTERNS["sd"]`, an SD model's components), as
    diffusers' `from_pretrained` does, the configs and the one weights set per folder that the loaders
    read for `variant` (`hub_files`, from the repository's listing; `weights` False: configs only);
    offline, or where the repository cannot be listed, what the cache holds of them all.
    Returns the local path (a snapshot folder for a hub id). CheckpointError, one line naming
    `source`, for a path that does not exist and is not a hub id; HubError for an id that is not
    cached while the hub is unreachable, or a failed download (unknown repository, revision, access...);
    VariantError (from the listing) for a folder whose variants `weights_file` would refuse."""
    if os.path.exists(source):
        return source
    if not is_hub_id(source):
        raise CheckpointError(f"{source}: no such file or folder (and not a hub id 'owner/name')")
    # ~0.15-0.4 s of imports (their HTTP stack), paid only for hub ids
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    patterns = allow_patterns or HUB_PATTERNS["sd"]
    if not constants.HF_HUB_OFFLINE:
        try:
            # model_info's siblings: the repository's files in one request (list_repo_files retries an
            # unreachable hub five times with backoff, ~25 s of "Retrying in 8s" lines before any error)
            listing = [s.rfilename for s in HfApi().model_info(source, revision=revision).siblings or []]
        except Exception:  # noqa: BLE001 - unreachable, unknown repo...: snapshot_download says which
            listing = None
        if listing is not None:
            patterns = [glob.escape(f) for f in hub_files(source, listing, patterns, variant, weights)]
    try:
        return snapshot_download(source, revision=revision, allow_patterns=patterns, ignore_patterns=HUB_IGNORE)
    except LocalEntryNotFoundError as e:
        mode = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
        raise HubError(source, f"hub id {source!r} (revision {revision or 'main'}) is not in the Hugging Face "
                               f"cache {constants.HF_HUB_CACHE} while {mode}. Download it once with network access "
                               f"(or point HF_HUB_CACHE at a cache that has it). Detail: "
                               f"{str(e).strip().splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - unknown repo, auth, bad revision...: one clear message
        detail = " ".join(str(e).split())  # huggingface_hub's messages span lines
        raise HubError(source, f"fetching it as a hub id failed ({type(e).__name__}: {detail})") from None
