"""FLAVARS' fusion encoder against PyTorch's own transformer layers."""

from __future__ import annotations

import torch
from torch import nn

from zoo.layers.fusion import FusionEncoder


def test_fusion_layers_equal_torch_transformer_encoder() -> None:
    """The batch-first layers give ``nn.TransformerEncoder``'s (pre-norm, GELU) outputs and
    gradients from the same state dict, padded text tokens included."""
    torch.manual_seed(0)
    width, heads, layers = 32, 4, 2
    ours = FusionEncoder(24, 16, width, layers, heads)
    layer = nn.TransformerEncoderLayer(
        width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    reference = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    reference.load_state_dict(
        {
            k.removeprefix("encoder."): v
            for k, v in ours.state_dict().items()
            if k.startswith("encoder.")
        }
    )
    image, text = torch.randn(3, 5, 24), torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    got = ours(image, text, mask)
    x = torch.cat([ours.cls_token.expand(3, -1, -1), *ours.project(image, text)], dim=1)
    pad = torch.cat([torch.zeros(3, 6, dtype=torch.bool), mask == 0], dim=1)
    want = ours.norm(reference(x, src_key_padding_mask=pad))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    got[:, :6].sum().backward()
    want[:, :6].sum().backward()
    for name in ("linear1.weight", "self_attn.in_proj_weight", "self_attn.out_proj.bias"):
        torch.testing.assert_close(
            ours.encoder["layers"][0].get_parameter(name).grad,
            reference.layers[0].get_parameter(name).grad,
            atol=1e-4,
            rtol=1e-4,
        )
