"""The split q/k/v/out attention computes what open_clip's MultiheadAttention computes."""

import copy

import pytest
import torch
from torch import nn
from toys import TOY_ARCH

from cl_bench.backbones.attention import SplitAttention, split_attention_
from cl_bench.backbones.tiny_clip import build_clip, read_config


@pytest.fixture(scope="module")
def clip_pair():
    """The shipped tiny-clip architecture (random weights) as open_clip builds it, and a split copy."""
    torch.manual_seed(0)
    original = build_clip(read_config()["arch"])
    with torch.no_grad():  # non-trivial biases, so a misplaced bias would show
        for module in original.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.in_proj_bias.normal_(0, 0.1)
                module.out_proj.bias.normal_(0, 0.1)
    split = copy.deepcopy(original)
    assert split_attention_(split) == len(original.visual.transformer.resblocks) + len(original.transformer.resblocks)
    return original, split


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_both_towers_match_open_clip_within_1e6(clip_pair, mode):
    original, split = clip_pair
    original.train(mode == "train")
    split.train(mode == "train")
    images = torch.randn(5, 3, 28, 28)
    tokens = torch.randint(1, 49000, (5, 16))
    tokens[:, -1] = 49407  # an end-of-text token: the text tower pools there (causal mask matters)
    with torch.no_grad():
        assert torch.allclose(split.encode_image(images), original.encode_image(images), atol=1e-6, rtol=0)
        assert torch.allclose(split.encode_text(tokens), original.encode_text(tokens), atol=1e-6, rtol=0)


def test_gradients_match_too():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    split = SplitAttention.from_multihead(mha)
    x = torch.randn(3, 7, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    causal = torch.full((7, 7), float("-inf")).triu(1)
    mha(x, x, x, need_weights=False, attn_mask=causal)[0].square().sum().backward()
    split(x2, x2, x2, attn_mask=causal)[0].square().sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)


@pytest.mark.parametrize("kind", ["bool", "float3d", "padding"])
def test_other_mask_conventions(kind):
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    split = SplitAttention.from_multihead(mha).eval()
    x = torch.randn(2, 5, 16)
    kwargs = {}
    if kind == "bool":
        kwargs["attn_mask"] = torch.ones(5, 5, dtype=torch.bool).triu(1)
    elif kind == "float3d":
        kwargs["attn_mask"] = torch.randn(2 * 2, 5, 5)
    else:
        kwargs["key_padding_mask"] = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        expected = mha(x, x, x, need_weights=False, **kwargs)[0]
        got = split(x, x, x, **kwargs)[0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_unsupported_attention_is_refused():
    with pytest.raises(ValueError):
        SplitAttention.from_multihead(nn.MultiheadAttention(8, 2, batch_first=False))
    with pytest.raises(ValueError):
        SplitAttention.from_multihead(nn.MultiheadAttention(8, 2, batch_first=True, dropout=0.1))


def test_toy_arch_is_split_everywhere():
    clip = build_clip(TOY_ARCH)
    split_attention_(clip)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in clip.modules())
