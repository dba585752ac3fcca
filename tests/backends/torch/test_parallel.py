"""runtime/parallel.py's split vocabulary, on two gloo processes: the same loss and gradients as the
whole embedding, logits and cross-entropy of runtime/layers.py, in float32 and bfloat16."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from switchc.backends.torch.runtime import layers, parallel

VOCAB, D_MODEL = 12, 4


def _loss_and_grads(
    tied: bool, split: int | None, ids: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, gradient of the embedding table and of the output projection (whole or this rank's
    rows / columns), the token losses weighted so that every position's gradient differs."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(VOCAB, D_MODEL, generator=generator).to(dtype)
    lm_head = torch.randn(D_MODEL, VOCAB, generator=generator).to(dtype)
    embedding, logits, cross_entropy = (
        layers.Embedding(VOCAB, D_MODEL).to(dtype),
        layers.Logits(D_MODEL, VOCAB).to(dtype),
        layers.CrossEntropy(),
    )
    with torch.no_grad():
        embedding.embedding.copy_(table)
        logits.lm_head.copy_(lm_head)
    if split is not None:
        rows = VOCAB // 2
        embedding.embedding.data = table[split * rows : (split + 1) * rows].clone()
        logits.lm_head.data = lm_head[:, split * rows : (split + 1) * rows].clone()
        group = dist.group.WORLD
        embedding = parallel.SplitEmbedding(embedding, group, split)
        logits = parallel.SplitLogits(logits, group)
        cross_entropy = parallel.SplitCrossEntropy(group, split)
    x = embedding(ids)
    out = embedding.attend(x) if tied else logits(x)
    token_loss = cross_entropy(out, targets)
    weights = torch.arange(1, token_loss.numel() + 1, dtype=torch.float32).view_as(token_loss)
    loss = (token_loss * weights).sum()
    loss.backward()
    head = embedding.embedding if tied else logits.lm_head
    assert embedding.embedding.grad is not None and head.grad is not None
    assert token_loss.dtype == torch.float32 and head.grad.dtype == dtype
    return loss.detach(), embedding.embedding.grad.float(), head.grad.float()


def _worker(rank: int, init: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        # ids and targets on both halves of the vocabulary, each shard's first and last row among
        # them, and the pad id 0 (its loss is masked later, by masked_mean)
        ids = torch.tensor([[0, 5, 6, 11, 3], [7, 1, 0, 9, 6]])
        targets = torch.tensor([[5, 6, 0, 11, 2], [8, 3, 5, 6, 10]])
        # float32 to rounding; bfloat16 to a few of its ulps (the shards' partial input gradients
        # are summed by an all-reduce, in another order than one matmul's)
        for dtype, rtol, atol in ((torch.float32, 1e-5, 1e-6), (torch.bfloat16, 2e-2, 2e-2)):
            for tied in (False, True):
                loss, table_grad, head_grad = _loss_and_grads(tied, None, ids, targets, dtype)
                split_loss, split_table_grad, split_head_grad = _loss_and_grads(tied, rank, ids, targets, dtype)
                rows = slice(rank * VOCAB // 2, (rank + 1) * VOCAB // 2)
                torch.testing.assert_close(split_loss, loss, rtol=rtol / 10, atol=0)
                torch.testing.assert_close(split_table_grad, table_grad[rows], rtol=rtol, atol=atol)
                head = head_grad[rows] if tied else head_grad[:, rows]
                torch.testing.assert_close(split_head_grad, head, rtol=rtol, atol=atol)
    finally:
        dist.destroy_process_group()


def test_a_split_vocabulary_gives_the_whole_loss_and_gradients(tmp_path: Path) -> None:
    """Untied (Logits) and tied (Embedding.attend) output projections; the gradient of the table
    gathers both its lookups and, when tied, the logits. A failed check in a process fails the test
    with that process's traceback."""
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}",), nprocs=2)
