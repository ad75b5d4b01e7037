import numpy as np
import pytest

from animatediff_jax.params import flax_path_to_torch, torch_key_to_flax
from convert.naming import flax_to_state_dict, state_dict_to_flax


@pytest.mark.parametrize("key,ndim,path", [
    ("down_blocks.0.resnets.1.conv1.weight", 4, ("down_blocks_0", "resnets_1", "conv1", "kernel")),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias", 1,
     ("down_blocks_0", "attentions_0", "transformer_blocks_0", "attn1", "to_out_0", "bias")),
    ("mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", 2,
     ("mid_block", "attentions_0", "transformer_blocks_0", "ff", "net_0", "proj", "kernel")),
    ("time_embedding.linear_1.weight", 2, ("time_embedding", "linear_1", "kernel")),
    ("conv_norm_out.weight", 1, ("conv_norm_out", "scale")),
    ("text_model.embeddings.token_embedding.weight", 2,
     ("text_model", "embeddings", "token_embedding", "embedding")),
    ("text_model.encoder.layers.11.mlp.fc1.weight", 2,
     ("text_model", "encoder", "layers_11", "mlp", "fc1", "kernel")),
])
def test_key_rename_both_ways(key, ndim, path):
    assert torch_key_to_flax(key, ndim) == path
    assert flax_path_to_torch(path) == key


def test_state_dict_round_trip_is_exact():
    rng = np.random.default_rng(0)
    sd = {
        "conv_in.weight": rng.normal(size=(8, 4, 3, 3)).astype(np.float32),
        "conv_in.bias": rng.normal(size=(8,)).astype(np.float32),
        "up_blocks.1.attentions.2.proj_in.weight": rng.normal(size=(16, 8)).astype(np.float32),
        "up_blocks.1.resnets.0.norm1.weight": rng.normal(size=(8,)).astype(np.float32),
    }
    tree = state_dict_to_flax(sd)
    assert tree["conv_in"]["kernel"].shape == (3, 3, 4, 8)
    assert tree["up_blocks_1"]["attentions_2"]["proj_in"]["kernel"].shape == (8, 16)
    back = flax_to_state_dict(tree)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])


def test_colliding_keys_are_refused():
    sd = {"a.0.weight": np.zeros((2, 2)), "a_0.weight": np.zeros((2, 2))}
    with pytest.raises(ValueError, match="a_0/kernel"):
        state_dict_to_flax(sd)
