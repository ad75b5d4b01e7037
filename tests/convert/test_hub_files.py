"""What a hub id downloads (`convert.sources.hub_files`, from the repository's listing): the configs and
tokenizer files the patterns match and, per folder, only the weights set `weights_file` reads there for
the variant asked (as diffusers' from_pretrained fetches), not every format and variant a repo holds."""
import pytest

from convert.sources import HUB_PATTERNS, VariantError, hub_files

# runwayml/stable-diffusion-v1-5's files (its listing, as HfApi().model_info gives it in siblings)
SD15 = """.gitattributes README.md model_index.json v1-5-pruned-emaonly.ckpt v1-5-pruned-emaonly.safetensors
v1-5-pruned.ckpt v1-5-pruned.safetensors feature_extractor/preprocessor_config.json safety_checker/config.json
safety_checker/model.safetensors safety_checker/pytorch_model.bin scheduler/scheduler_config.json
text_encoder/config.json text_encoder/flax_model.msgpack text_encoder/model.fp16.safetensors
text_encoder/model.safetensors text_encoder/pytorch_model.bin text_encoder/pytorch_model.fp16.bin
tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json tokenizer/vocab.json
unet/config.json unet/diffusion_flax_model.msgpack unet/diffusion_pytorch_model.bin
unet/diffusion_pytorch_model.fp16.bin unet/diffusion_pytorch_model.fp16.safetensors
unet/diffusion_pytorch_model.non_ema.bin unet/diffusion_pytorch_model.non_ema.safetensors
unet/diffusion_pytorch_model.safetensors vae/config.json vae/diffusion_flax_model.msgpack
vae/diffusion_pytorch_model.bin vae/diffusion_pytorch_model.fp16.bin vae/diffusion_pytorch_model.fp16.safetensors
vae/diffusion_pytorch_model.safetensors""".split()
CONFIGS = ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "tokenizer/merges.txt",
           "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
           "unet/config.json", "vae/config.json"]


def weights(files: list[str]) -> list[str]:
    return [f for f in files if f not in CONFIGS]


@pytest.mark.parametrize("variant, chosen", [
    (None, ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors"]),
    ("fp16", ["text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
              "vae/diffusion_pytorch_model.fp16.safetensors"]),
    # a variant only some folders hold: the plain weights of the others (diffusers falls back so per component)
    ("non_ema", ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.non_ema.safetensors",
                 "vae/diffusion_pytorch_model.safetensors"]),
    ("int8", ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
              "vae/diffusion_pytorch_model.safetensors"])])
def test_an_sd15_repo_downloads_one_weights_file_per_component(variant, chosen):
    files = hub_files("org/sd", SD15, HUB_PATTERNS["sd"], variant)
    assert [f for f in files if f in CONFIGS] == CONFIGS
    assert weights(files) == chosen


def test_configs_only_where_no_weights_are_asked_for():
    assert hub_files("org/sd", SD15, HUB_PATTERNS["sd"], "fp16", weights=False) == CONFIGS


def test_bin_where_a_folder_has_no_safetensors():
    bins = [f for f in SD15 if not f.endswith(".safetensors")]
    assert weights(hub_files("org/sd", bins, HUB_PATTERNS["sd"], "fp16")) == [
        "text_encoder/pytorch_model.fp16.bin", "unet/diffusion_pytorch_model.fp16.bin",
        "vae/diffusion_pytorch_model.fp16.bin"]


def test_an_fp16_only_repo_downloads_its_one_variant():
    files = [*CONFIGS, "text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
             "unet/diffusion_pytorch_model.fp16.bin", "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert weights(hub_files("org/sd", files, HUB_PATTERNS["sd"])) == [
        "text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors"]


def test_a_sharded_save_downloads_its_index_and_its_shards_only():
    shards = [f"unet/diffusion_pytorch_model{v}-0000{i}-of-00002.{ext}" for v in ("", ".fp16") for i in (1, 2)
              for ext in ("safetensors", "bin")]
    files = [*CONFIGS, *shards, "unet/diffusion_pytorch_model.safetensors.index.json",
             "unet/diffusion_pytorch_model.bin.index.json", "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
             "text_encoder/model.fp16-00001-of-00002.safetensors", "text_encoder/model.fp16-00002-of-00002.safetensors",
             "text_encoder/model.fp16.safetensors.index.json", "text_encoder/model.safetensors",
             "vae/diffusion_pytorch_model.safetensors"]
    assert weights(hub_files("org/sd", files, HUB_PATTERNS["sd"], "fp16")) == [
        "text_encoder/model.fp16-00001-of-00002.safetensors", "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/model.fp16.safetensors.index.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json", "vae/diffusion_pytorch_model.safetensors"]
    assert weights(hub_files("org/sd", files, HUB_PATTERNS["sd"])) == [
        "text_encoder/model.safetensors", "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json", "vae/diffusion_pytorch_model.safetensors"]


def test_a_motion_adapter_repo_downloads_its_config_and_one_weights_file():
    # guoyww/animatediff-motion-adapter-v1-5-2's files
    files = [".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.fp16.safetensors",
             "diffusion_pytorch_model.safetensors"]
    assert hub_files("org/mm", files, HUB_PATTERNS["model"]) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert hub_files("org/mm", files, HUB_PATTERNS["model"], "fp16") == [
        "config.json", "diffusion_pytorch_model.fp16.safetensors"]


@pytest.mark.parametrize("variant, says", [
    (None, "org/two (unet/): no plain weights, only the variants bf16, fp16 of diffusion_pytorch_model: "
           "choose one (--variant)"),
    ("int8", "org/two (unet/): no variant 'int8' (--variant) and no plain weights; the variants there: bf16, fp16 "
             "of diffusion_pytorch_model: give --variant one of them")])
def test_a_variant_a_folder_lacks_is_refused_from_the_listing_naming_the_variants_there(variant, says):
    files = [*CONFIGS, "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bf16.safetensors"]
    with pytest.raises(VariantError) as e:
        hub_files("org/two", files, HUB_PATTERNS["sd"], variant)
    assert str(e.value) == says


def test_a_lora_repo_downloads_its_safetensors_not_the_bin_beside_it():
    """PEFT adapters and diffusers' save_lora_weights are often pushed in both formats; the loaders read
    the .safetensors (convert.lora.LORA_FOLDER_WEIGHTS' order)."""
    listing = ["README.md", "adapter_config.json", "adapter_model.bin", "adapter_model.safetensors",
               "pytorch_lora_weights.bin", "other.bin"]
    assert hub_files("o/lora", listing, HUB_PATTERNS["lora"]) == [
        "adapter_config.json", "adapter_model.safetensors", "pytorch_lora_weights.bin"]
