"""switchc's weights (a safetensors file keyed by IR names, as `train.py --export-init` writes it) as
a state dict of transformers' SwitchTransformersForConditionalGeneration, so HF starts from the
same weights as the generated programs.

The two models are the same function of their weights where nothing is dropped (both are T5 v1.1
blocks: scale-only RMS norm, no biases, unscaled attention logits, one relative position bias per
stack, a float32 top-1 router whose probability scales the expert's output);
`benchmarks/check_hf_parity.py` checks that they compute the same loss. Only the layouts differ:
switchc keeps a projection as [in, heads, d_kv] or [in, out] (x @ W), torch's nn.Linear as
[out, in], and HF keeps one module per expert where switchc stacks them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

# IR name inside a block -> HF name inside the block's layer list, per stack
_ATTENTION = {"attention": "SelfAttention", "cross_attention": "EncDecAttention"}
_LAYER = {
    "encoder": {"attention": 0, "ffn": 1},
    "decoder": {"attention": 0, "cross_attention": 1, "ffn": 2},
}
_NORM = {"attention_norm": "attention", "cross_attention_norm": "cross_attention", "ffn_norm": "ffn"}


def hf_state_dict(weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """HF's state dict for switchc's `weights` (IR name -> array); every IR weight is used once and
    every HF weight is set (load it with strict=True to check the latter)."""
    import torch

    state: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        parts = name.split("/")
        if name == "shared/embedding":
            for key in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
                state[key] = value  # one table, tied three ways in HF's module tree
        elif name == "decoder/logits/lm_head":
            state["lm_head.weight"] = value.T
        elif parts[1] == "final_norm":
            state[f"{parts[0]}.final_layer_norm.weight"] = value
        elif parts[1] == "position_bias":
            state[f"{parts[0]}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = value
        elif re.fullmatch(r"\d+", parts[1]):
            stack, block, module, leaf = parts
            prefix = f"{stack}.block.{block}.layer"
            if module in _NORM:
                state[f"{prefix}.{_LAYER[stack][_NORM[module]]}.layer_norm.weight"] = value
            elif module in _ATTENTION:
                layer = f"{prefix}.{_LAYER[stack][module]}.{_ATTENTION[module]}"
                state[f"{layer}.{leaf}.weight"] = _attention(leaf, value)
            elif module == "ffn":
                state[f"{prefix}.{_LAYER[stack]['ffn']}.mlp.{leaf}.weight"] = value.T
            elif module == "router":
                state[f"{prefix}.{_LAYER[stack]['ffn']}.mlp.router.classifier.weight"] = value.T
            elif module == "experts":
                for expert, kernel in enumerate(value):
                    state[f"{prefix}.{_LAYER[stack]['ffn']}.mlp.experts.expert_{expert}.{leaf}.weight"] = kernel.T
            else:
                raise KeyError(f"no HF weight for {name}")
        else:
            raise KeyError(f"no HF weight for {name}")
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in state.items()}


def _attention(leaf: str, kernel: np.ndarray) -> np.ndarray:
    """q, k, v [d_model, heads, d_kv] and o [heads, d_kv, d_model] as nn.Linear weights [out, in]."""
    if leaf == "o":
        return kernel.reshape(-1, kernel.shape[-1]).T
    return kernel.reshape(kernel.shape[0], -1).T
