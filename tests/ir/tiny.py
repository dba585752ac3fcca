"""A tiny Switch spec whose every count the tests work out by hand (independent of specs/).

batch 32, 128 input and 32 target tokens, d_model 128, d_ff 512 (ReLU), 4 heads x 32,
vocab 4096, 8 experts in block 1 of each 2-block stack, float32, untied logits.
"""

from __future__ import annotations

from switchc.errors import Source
from switchc.spec import Spec, parse_spec

MODEL = """\
model:
  vocab_size: 4096
  d_model: 128
  d_ff: 512
  d_kv: 32
  num_heads: 4
  encoder_layers: 2
  decoder_layers: 2
  ffn_activation: relu
  dtype: float32
"""
MOE = """\
moe:
  num_experts: 8
  expert_every: 2
  top_k: 1
  capacity_factor: {train: 1.25, eval: 2.0}
  min_capacity: 4
  group_size: 4096
"""
REST = """\
mesh:
  axes: {data: 1}
train:
  batch_size: 32
  inputs_length: 128
  targets_length: 32
  optimizer: {name: adam}
"""
TINY = MODEL + MOE + REST

B, LI, LT, D, F, H, K, V, E = 32, 128, 32, 128, 512, 4, 32, 4096, 8
FLOAT = 4


def tiny(*overrides: str, text: str = TINY) -> Spec:
    """The tiny spec with `--set` overrides applied."""
    return parse_spec(Source("tiny.yaml", text), list(overrides), name="tiny")


def tiny_dense(*overrides: str) -> Spec:
    """The same model with no Switch layers."""
    return tiny(*overrides, text=MODEL + REST)
