"""The shared data pipeline (backends/common/data.py): tokenizers, the split, span corruption.

SentencePiece tests train small models (412 pieces) on a slice of Shakespeare, about a second each.
"""

from __future__ import annotations

import errno
import functools
import gzip
import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from switchc.backends.common import data

VOCAB = 512  # 412 SentencePiece pieces + 100 sentinels


@functools.cache
def plays() -> tuple[str, ...]:
    return tuple(data.read_documents("shakespeare", None, "text"))


def corpus_slice(characters: int = 200_000) -> list[str]:
    """The first `characters` of the corpus as two documents."""
    text = "".join(plays())[:characters]
    return [text[: characters // 2], text[characters // 2 :]]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWITCHC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> data.SentencePieceTokenizer:
    pytest.importorskip("sentencepiece")
    return data.sentencepiece_tokenizer(corpus_slice(), VOCAB, tmp_path_factory.mktemp("cache"))


# ---- ids ---------------------------------------------------------------------------------------


def test_byte_tokenizer_ids() -> None:
    tokenizer = data.ByteTokenizer(VOCAB)
    assert tokenizer.encode("A").tolist() == [3 + ord("A")]
    assert tokenizer.num_sentinels == VOCAB - 259
    assert tokenizer.decode(tokenizer.encode("to be, or not")) == "to be, or not"


def test_sentencepiece_follows_t5_ids(spm_tokenizer: data.SentencePieceTokenizer) -> None:
    processor = spm_tokenizer.processor
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)
    assert [processor.id_to_piece(i) for i in range(4)] == ["<pad>", "</s>", "<unk>", "\n"]
    assert spm_tokenizer.num_pieces == VOCAB - data.EXTRA_IDS
    assert spm_tokenizer.num_sentinels == data.EXTRA_IDS
    ids = spm_tokenizer.encode("".join(plays())[:20_000])
    assert ids.dtype == np.int32 and ids.min() > data.UNK and ids.max() < VOCAB - data.EXTRA_IDS
    assert spm_tokenizer.encode("\u4e2d").tolist()[-1] == data.UNK  # a character never seen in training


def test_sentencepiece_round_trips_shakespeare(spm_tokenizer: data.SentencePieceTokenizer) -> None:
    """Lines, blank lines, markdown and trailing double spaces all survive encode -> decode."""
    text = plays()[0][:5000]
    assert spm_tokenizer.decode(spm_tokenizer.encode(text)) == text
    for line in plays()[1].splitlines()[:200]:
        assert spm_tokenizer.decode(spm_tokenizer.encode(line)) == line
    assert len(spm_tokenizer.encode(text)) < 0.6 * len(text.encode())  # it compresses, even with 412 pieces


def test_sentencepiece_decode_drops_pad_eos_and_sentinels(spm_tokenizer: data.SentencePieceTokenizer) -> None:
    ids = spm_tokenizer.encode("Good night").tolist()
    assert spm_tokenizer.decode([*ids[:1], VOCAB - 1, *ids[1:], data.EOS, data.PAD]) == "Good night"


# ---- training and the cache --------------------------------------------------------------------


def test_training_is_deterministic() -> None:
    pytest.importorskip("sentencepiece")
    sentences = data.training_sentences(corpus_slice(100_000))
    assert data.train_sentencepiece(sentences, 300) == data.train_sentencepiece(sentences, 300)


def test_second_call_uses_the_cache(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sentencepiece")
    documents = corpus_slice(100_000)
    first = data.sentencepiece_tokenizer(documents, 400)
    assert "sentencepiece: trained 300 pieces" in capsys.readouterr().err
    # the eval split asks again in the same process: the same tokenizer, and nothing more said
    # (it used to add "using cached" after "trained")
    assert data.sentencepiece_tokenizer(documents, 400) is first and capsys.readouterr().err == ""
    (model,) = (cache / "sentencepiece").glob("*.model")
    assert not list((cache / "sentencepiece").glob(".*"))  # no temporary file left behind
    os.utime(model, (1, 1))  # a retrain would replace the file and so its mtime
    data._BUILT.clear()  # as in the next run's process
    second = data.sentencepiece_tokenizer(documents, 400)
    assert "sentencepiece: using cached" in capsys.readouterr().err
    assert model.stat().st_mtime == 1
    assert second.processor.serialized_model_proto() == first.processor.serialized_model_proto()
    assert second.identity == first.identity and first.identity.startswith("sentencepiece ")
    data.sentencepiece_tokenizer(documents, 410)  # another size is another model
    other_text = data.sentencepiece_tokenizer(corpus_slice(90_000), 400)  # and so is other text
    assert len(list((cache / "sentencepiece").glob("*.model"))) == 3
    assert other_text.identity != first.identity  # what a resumed run's checkpoint is held to


def test_processes_starting_together_train_once(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every rank of a job builds the tokenizer at start: with an empty cache each used to train
    the same model. One that finds another training (holding the lock) waits, then loads its file."""
    fcntl = pytest.importorskip("fcntl")
    pytest.importorskip("sentencepiece")
    documents = corpus_slice(100_000)
    data.sentencepiece_tokenizer(documents, 400)  # the model the other process will have cached
    (model,) = (cache / "sentencepiece").glob("*.model")
    trained = model.read_bytes()
    model.unlink()
    data._BUILT.clear()
    capsys.readouterr()
    found: list[data.SentencePieceTokenizer] = []
    with open(model.with_suffix(".lock"), "a") as other:  # another process, training now
        fcntl.flock(other, fcntl.LOCK_EX)
        waiting = threading.Thread(target=lambda: found.append(data.sentencepiece_tokenizer(documents, 400)))
        waiting.start()
        deadline = time.monotonic() + 30
        while "waiting for another process" not in capsys.readouterr().err[-200:] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not found  # still waiting
        model.write_bytes(trained)  # what the other process caches before it lets go
    waiting.join(30)
    assert found and found[0].processor.serialized_model_proto() == trained
    assert "sentencepiece: using cached" in capsys.readouterr().err  # loaded, not trained again


def test_a_given_model_is_checked(tmp_path: Path, spm_tokenizer: data.SentencePieceTokenizer) -> None:
    path = tmp_path / "given.model"
    path.write_bytes(spm_tokenizer.processor.serialized_model_proto())
    config = SimpleNamespace(tokenizer="sentencepiece", spm_model=str(path), vocab_size=VOCAB)
    assert data.tokenizer_for(config, []).num_pieces == VOCAB - data.EXTRA_IDS
    small = SimpleNamespace(tokenizer="sentencepiece", spm_model=str(path), vocab_size=VOCAB - 1)
    with pytest.raises(SystemExit, match=r"model\.vocab_size must be at least 512"):
        data.tokenizer_for(small, [])


def test_too_small_a_vocabulary_is_a_clear_error(cache: Path) -> None:
    """SentencePiece's own message ("Vocabulary size is smaller than required_chars. 20 vs 70.
    Increase vocab_size or decrease character_coverage") names an option a spec cannot set: the
    error names the model.vocab_size that does train instead."""
    pytest.importorskip("sentencepiece")
    with pytest.raises(SystemExit) as stop:
        data.sentencepiece_tokenizer(corpus_slice(50_000), 120)
    assert stop.value.code == (
        "error: SentencePiece could not train 20 pieces: the training split has 66 distinct characters, each "
        "needs a piece of its own, and 4 pieces are special: 70 pieces at least\n"
        "hint: set model.vocab_size to at least 170 (70 pieces + 100 sentinels; a few thousand for real text), "
        "or use data.tokenizer: byte"
    )
    assert data.sentencepiece_tokenizer(corpus_slice(50_000), 170).num_pieces == 70  # and that is enough


def test_long_lines_are_cut_into_pieces_sentencepiece_trains_on(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SentencePiece skips lines over 4192 bytes, saying so only in its log: a corpus of one line
    (or of long JSONL records) trained nothing ("INTERNAL: ... !sentences_.empty()"), or a model
    that never saw most of the text, and the log counted the skipped lines as trained on."""
    limit = data.SPM_OPTIONS["max_sentence_length"]
    line = "".join(corpus_slice(50_000)).replace("\n", " ")
    pieces = data._cut(line, limit)
    assert "".join(pieces) == line and all(len(piece.encode()) <= limit for piece in pieces)
    assert all(piece.startswith(" ") for piece in pieces[1:])  # cut before a space: words stay whole
    assert [len(piece.encode()) for piece in data._cut("\u4e2d" * 3000, limit)] == [4191, 4191, 618]  # 3 bytes each
    assert data._cut("a" * 5000, limit) == ["a" * limit, "a" * (5000 - limit)]
    assert data._cut("a" * 10 + " " * 9000, limit) == ["a" * 10 + " " * (limit - 10)]  # no blank pieces
    assert data.training_sentences(["short\n\n" + line]) == ["short", *pieces]
    pytest.importorskip("sentencepiece")
    tokenizer = data.sentencepiece_tokenizer(["short\n" + line], 400)
    said = capsys.readouterr().err
    assert f"on {len(pieces) + 1} lines ({len(pieces)} of them pieces of 1 line over 4192 bytes) in " in said
    assert np.count_nonzero(tokenizer.encode(line) == data.UNK) == 0


@pytest.mark.parametrize(
    ("documents", "said"), [([""], "it is empty"), (["  \n\n\t", ""], "its 5 characters are all whitespace")]
)
def test_a_training_split_without_text_is_a_clear_error(cache: Path, documents: list[str], said: str) -> None:
    """Not SentencePiece's "INTERNAL: ... !sentences_.empty()" with a hint about model.vocab_size."""
    with pytest.raises(SystemExit) as stop:
        data.sentencepiece_tokenizer(documents, 400)
    assert stop.value.code == (
        f"error: the training split of the corpus has no text to train a SentencePiece tokenizer on: {said}\n"
        "hint: give data.path a corpus with text (in a jsonl corpus, in each record's data.jsonl_field)"
    )


def test_a_training_split_of_characters_sentencepiece_ignores_is_a_clear_error(cache: Path) -> None:
    pytest.importorskip("sentencepiece")
    with pytest.raises(SystemExit) as stop:
        data.sentencepiece_tokenizer(["\x00\x00\n\x00"], 400)
    assert stop.value.code == (
        "error: SentencePiece found no characters to train on in the training split (2 lines, of characters it "
        "ignores, such as NUL)\nhint: give data.path a corpus with text, or use data.tokenizer: byte"
    )


def test_an_unwritable_cache_costs_only_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$SWITCHC_CACHE naming a file, or a read-only cache, used to end the run with a traceback
    after training the tokenizer: the run goes on with the model it trained, and says why it was
    not kept (once, though the eval split asks again)."""
    pytest.importorskip("sentencepiece")
    documents = corpus_slice(50_000)
    (tmp_path / "cache").write_text("a file, not a directory\n")
    monkeypatch.setenv("SWITCHC_CACHE", str(tmp_path / "cache"))
    tokenizer = data.sentencepiece_tokenizer(documents, 400)
    assert data.sentencepiece_tokenizer(documents, 400) is tokenizer and tokenizer.num_pieces == 300
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and said.startswith("sentencepiece: trained 300 pieces")
    assert said.endswith(
        f"not cached: cannot write {tmp_path / 'cache' / 'sentencepiece'} ({tmp_path / 'cache'} is a file); "
        "later runs train it again unless SWITCHC_CACHE names a writable directory\n"
    )

    def read_only(*args: object, **kwargs: object) -> None:  # chmod would not stop root
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setenv("SWITCHC_CACHE", str(tmp_path / "read-only"))
    monkeypatch.setattr(data.os, "replace", read_only)
    data._BUILT.clear()
    assert data.sentencepiece_tokenizer(documents, 400).num_pieces == 300
    said = capsys.readouterr().err
    assert f"not cached: cannot write {tmp_path / 'read-only' / 'sentencepiece'} (Read-only file system); " in said
    left = [p.name for p in (tmp_path / "read-only" / "sentencepiece").iterdir() if p.suffix != ".lock"]
    assert not left  # the temporary file is removed (the lock file is what a writable cache keeps too)


# ---- split and span corruption -----------------------------------------------------------------


def test_an_evaluation_larger_than_the_held_out_split_is_noted() -> None:
    """--eval-batches x batch size past the split's examples wraps around silently otherwise."""
    examples = data.SpanCorruption(
        tokens=np.arange(3, 3 + 10 * 40, dtype=np.int32) % 200 + 3,
        inputs_length=32,
        targets_length=16,
        vocab_size=300,
        seed=0,
        noise_density=0.15,
        mean_noise_span=3.0,
    )
    count = examples.num_examples
    assert examples.repeats(1, count) is None
    assert examples.repeats(3, count) == (
        f"note: the held-out split holds {count} example(s); an evaluation of --eval-batches 3 x batch {count} = "
        f"{3 * count} reads them 3 times over (more held-out text: data.eval_fraction or data.eval_path; or lower "
        "--eval-batches)"
    )


def test_split_holds_out_the_last_characters() -> None:
    train, held_out = data.split_documents(["abcdef", "ghij", "klmnopqrst"], 0.3)
    assert "".join(train) == "abcdefghijklmn" and "".join(held_out) == "opqrst"
    assert train[-1] == "klmn" and held_out == ["opqrst"]
    assert data.split_documents(["abc"], 0.0) == (["abc"], [])


def config(**changes: object) -> SimpleNamespace:
    values: dict[str, object] = {
        "source": "shakespeare",
        "path": None,
        "jsonl_field": "text",
        "tokenizer": "byte",
        "spm_model": None,
        "vocab_size": VOCAB,
        "inputs_length": 64,
        "targets_length": 24,
        "noise_density": 0.15,
        "mean_noise_span": 3.0,
        "eval_fraction": 0.05,
        "seed": 0,
        "objective": "span_corruption",
        "batch_size": 8,
    }
    return SimpleNamespace(**(values | changes))


def test_an_eval_path_is_the_evaluation_text_and_all_of_data_path_trains(tmp_path: Path) -> None:
    """data.eval_path: a corpus of its own to evaluate on (a T5X validation split); nothing of
    data.path is held out."""
    (tmp_path / "train.txt").write_text("a" * 30_000)
    (tmp_path / "valid.txt").write_text("b" * 5_000)
    settings = {"source": "text", "path": str(tmp_path / "train.txt"), "eval_fraction": 0.0}
    train = data.dataset(config(**settings, eval_path=str(tmp_path / "valid.txt")))
    held_out = data.dataset(config(**settings, eval_path=str(tmp_path / "valid.txt")), "eval")
    assert len(train.tokens) == 30_001  # every character, and EOS
    assert set(held_out.tokens.tolist()) == {data.BYTE_OFFSET + ord("b"), data.EOS}
    with pytest.raises(SystemExit, match=r"the evaluation text \(data.eval_path .*short.txt\) has 11 tokens"):
        (tmp_path / "short.txt").write_text("b" * 10)
        data.dataset(config(**settings, eval_path=str(tmp_path / "short.txt")), "eval")


def test_an_eval_path_that_shares_files_with_data_path_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Evaluating on training text is allowed (a smoke test may want it) but not a held-out measure:
    said once. A missing eval_path is named as data.eval_path."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("a" * 30_000)
    settings = {"source": "text", "path": str(tmp_path / "corpus"), "eval_fraction": 0.0}
    data._SAID.clear()
    data.dataset(config(**settings, eval_path=str(tmp_path / "corpus" / "a.txt")), "eval")
    said = capsys.readouterr().err
    assert f"note: data.eval_path and data.path share 1 file(s) ({tmp_path / 'corpus' / 'a.txt'})" in said
    assert "the eval loss is not a held-out measure" in said
    with pytest.raises(SystemExit, match=r"^error: data.eval_path .*nope does not exist"):
        data.dataset(config(**settings, eval_path=str(tmp_path / "nope")), "eval")


def test_span_corruption_with_sentencepiece_keeps_lengths(tmp_path: Path, cache: Path) -> None:
    pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(corpus_slice(100_000)))
    spm = config(tokenizer="sentencepiece", source="text", path=str(corpus))
    train = data.dataset(spm)
    held_out = data.dataset(spm, "eval")
    assert len(list((cache / "sentencepiece").glob("*.model"))) == 1  # both splits share one model
    assert held_out.num_examples < train.num_examples / 10
    tokenizer = data.tokenizer_for(spm, data.split_documents(data.read_documents("text", str(corpus), "text"), 0.05)[0])
    inputs_length, targets_length = data.corrupted_lengths(train.raw_length, 0.15, 3.0)
    batch = train.batch(0, 8)
    assert batch.inputs.shape == (8, 64) and batch.targets.shape == (8, 24)
    sentinel_floor = VOCAB - data.EXTRA_IDS
    for inputs, targets in zip(batch.inputs, batch.targets, strict=True):
        assert np.count_nonzero(inputs) == inputs_length and np.count_nonzero(targets) == targets_length
        sentinels = [int(t) for t in targets if t >= sentinel_floor]
        assert sentinels == list(range(VOCAB - 1, VOCAB - 1 - len(sentinels), -1))  # <extra_id_0>, 1, ...
        assert [int(i) for i in inputs if i >= sentinel_floor] == sentinels
        assert all(data.UNK < t < tokenizer.num_pieces for t in inputs if 0 < t < sentinel_floor and t != data.EOS)
        # putting the spans back gives the original tokens
        assert tokenizer.decode(_uncorrupt(inputs, targets, sentinel_floor)) in "".join(corpus_slice(100_000))


def _uncorrupt(inputs: np.ndarray, targets: np.ndarray, sentinel_floor: int) -> list[int]:
    spans: dict[int, list[int]] = {}
    current = -1
    for token in targets.tolist():
        if token >= sentinel_floor:
            current = token
            spans[current] = []
        elif token not in (data.PAD, data.EOS):
            spans[current].append(token)
    out: list[int] = []
    for token in inputs.tolist():
        if token >= sentinel_floor:
            out += spans[token]
        elif token not in (data.PAD, data.EOS):
            out.append(token)
    return out


def test_too_few_sentinels_for_the_spans_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="makes up to 7 spans, but the byte tokenizer has 3 sentinels"):
        data.dataset(config(vocab_size=262, inputs_length=128, targets_length=32))


def test_prefix_lm_splits_a_chunk_into_the_text_before_and_after_a_point() -> None:
    prefix_lm = data.dataset(config(objective="prefix_lm", inputs_length=16, targets_length=8))
    assert isinstance(prefix_lm, data.PrefixLM) and prefix_lm.raw_length == 15 + 7
    stream = prefix_lm.tokens.astype("<u2").tobytes()
    batch = prefix_lm.batch(0, 32)
    assert batch.inputs.shape == (32, 16) and batch.targets.shape == (32, 8)
    splits = set()
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        input_pads, target_pads = inputs.count(data.PAD), targets.count(data.PAD)  # the corpus has no id 0
        before, after = inputs[: len(inputs) - input_pads - 1], targets[: len(targets) - target_pads - 1]
        assert before and after  # a token on each side, then EOS, then padding
        assert inputs[len(before) :] == [data.EOS] + [data.PAD] * input_pads
        assert targets[len(after) :] == [data.EOS] + [data.PAD] * target_pads
        # the two sides are adjacent in the corpus: the chunk read across the split point
        assert _in_stream(stream, before + after)
        assert max(before + after) < data.BYTE_OFFSET + 256  # bytes only: no sentinels
        splits.add((len(before), len(after)))
    assert len(splits) > 5  # the split point is drawn per example
    again = data.dataset(config(objective="prefix_lm", inputs_length=16, targets_length=8)).batch(0, 32)
    assert (again.inputs == batch.inputs).all() and (again.targets == batch.targets).all()


def test_prefix_lm_needs_two_positions_on_each_side() -> None:
    with pytest.raises(
        SystemExit, match=r"prefix_lm needs targets_length >= 2 \(room for a token and EOS on each side"
    ):
        data.dataset(config(objective="prefix_lm", targets_length=1))


def _in_stream(stream: bytes, tokens: list[int]) -> bool:
    """Whether `tokens` occur consecutively in `stream` (token ids as little-endian uint16)."""
    needle = np.array(tokens, "<u2").tobytes()
    position = stream.find(needle)
    while position >= 0 and position % 2:  # a match must start at a token boundary
        position = stream.find(needle, position + 1)
    return position >= 0


def test_a_note_is_printed_once_per_process(capsys: pytest.CaptureFixture[str]) -> None:
    """The train and eval splits each build the tokenizer: its note appears once, not twice."""
    data._say("sentencepiece: using cached /some/model (300 pieces) [test]")
    data._say("sentencepiece: using cached /some/model (300 pieces) [test]")
    assert capsys.readouterr().err.count("using cached /some/model") == 1


def test_a_text_folder_skips_hidden_files_and_names_one_that_is_not_utf8(tmp_path: Path) -> None:
    """A corpus folder under git (or with .DS_Store, editors' swap files) trains on its text only;
    a file in another encoding stops the run, named, instead of a UnicodeDecodeError traceback."""
    corpus = tmp_path / "corpus"
    (corpus / ".git" / "objects").mkdir(parents=True)
    (corpus / ".git" / "objects" / "ab").write_bytes(b"\x78\x9c\xff")
    (corpus / ".notes.swp").write_bytes(b"\x00\xff")
    (corpus / "a.txt").write_text("first\n")
    (corpus / "sub").mkdir()
    (corpus / "sub" / "b.txt").write_text("second\n")
    assert data.read_documents("text", str(corpus), "text") == ["first\n", "second\n"]
    (corpus / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(SystemExit) as stop:
        data.read_documents("text", str(corpus), "text")
    assert str(stop.value.code).startswith(f"error: data file {corpus / 'latin1.txt'} is not UTF-8 text (")
    assert f"move it out of {corpus}, or convert it to UTF-8" in str(stop.value.code)
    (tmp_path / "hidden-only").mkdir()
    (tmp_path / "hidden-only" / ".x").write_text("x")
    with pytest.raises(SystemExit, match="holds no files"):
        data.read_documents("text", str(tmp_path / "hidden-only"), "text")


def test_jsonl_records_give_their_text_field_and_anything_else_is_named(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "first", "id": 1}\n\n{"text": "second"}\n')
    assert data.read_documents("jsonl", str(corpus), "text") == ["first", "second"]
    for line, said in [
        ('{"text": "x"', "not valid JSON (Expecting ',' delimiter at column 13)"),
        ('{"body": "x", "id": 2}', "no 'text' field (its fields: 'body', 'id')"),
        ("[1, 2]", "a JSON array, not an object"),
        ('{"text": 5}', "the 'text' field is a JSON number, 5, not text"),
        ('{"text": null}', "the 'text' field is null, not text"),
        ('{"text": ["a", "b"]}', 'the \'text\' field is a JSON array, ["a", "b"], not text'),
    ]:
        corpus.write_text(f'{{"text": "first"}}\n{line}\n')
        with pytest.raises(SystemExit) as stop:
            data.read_documents("jsonl", str(corpus), "text")
        assert str(stop.value.code).startswith(f"error: {corpus}:2: {said}\nhint: each line of a jsonl"), (
            stop.value.code
        )


def test_jsonl_lines_end_at_newlines_only(tmp_path: Path) -> None:
    """json.dumps(ensure_ascii=False) writes U+2028, U+2029 and U+0085 raw inside strings, where
    str.splitlines() used to break a record in two ("not valid JSON"). "\r\n" still ends a line."""
    text = "one\u2028two\u2029three\x85four\x1cfive"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(
        (json.dumps({"text": text}, ensure_ascii=False) + "\r\n" + '{"text": "second"}\r\n').encode("utf-8")
    )
    assert data.read_documents("jsonl", str(corpus), "text") == [text, "second"]


def test_a_corpus_folder_follows_symlinks_and_names_a_dangling_one(tmp_path: Path) -> None:
    """Linked files and folders used to be skipped without a word (a dangling link too): links are
    followed, a loop is read once, and a dangling link stops the run, named."""
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    (corpus / "sub").mkdir(parents=True)
    (elsewhere / "folder").mkdir(parents=True)
    (corpus / "a.txt").write_text("a")
    (corpus / "sub" / "c.txt").write_text("c")
    (elsewhere / "b.txt").write_text("b")
    (elsewhere / "folder" / "d.txt").write_text("d")
    (corpus / "b.txt").symlink_to(elsewhere / "b.txt")
    (corpus / "linked").symlink_to(elsewhere / "folder")
    (corpus / "sub" / "up").symlink_to(corpus)  # a loop: corpus/sub/up/sub/up/...
    (elsewhere / "folder" / "back").symlink_to(corpus)  # another, through a linked folder
    assert data.corpus_files(corpus) == [corpus / n for n in ("a.txt", "b.txt", "linked/d.txt", "sub/c.txt")]
    assert data.read_documents("text", str(corpus), "text") == ["a", "b", "d", "c"]
    (corpus / "sub" / "gone.txt").symlink_to(tmp_path / "moved.txt")
    with pytest.raises(SystemExit) as stop:
        data.read_documents("text", str(corpus), "text")
    assert stop.value.code == (
        f"error: data path {corpus} holds {corpus / 'sub' / 'gone.txt'}, a dangling symlink (to "
        f"{tmp_path / 'moved.txt'}: No such file or directory)\nhint: remove the link, or point it at a file"
    )
    (tmp_path / "link.txt").symlink_to(tmp_path / "moved.txt")
    with pytest.raises(SystemExit, match=r"link\.txt is a dangling symlink \(to .*moved\.txt\)$"):
        data.read_documents("text", str(tmp_path / "link.txt"), "text")


def test_an_unreadable_corpus_file_or_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a PermissionError traceback, nor (a folder) its files silently left out. Refused by
    monkeypatching, as chmod 000 would not stop root."""
    (tmp_path / "corpus" / "locked").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("a")
    scandir, read_bytes = os.scandir, Path.read_bytes

    def refuse(path: Path, read: Any) -> Any:
        if Path(path).name in ("locked", "a.txt"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return read(path)

    monkeypatch.setattr(data.os, "scandir", lambda path: refuse(path, scandir))
    with pytest.raises(SystemExit) as stop:
        data.read_documents("text", str(tmp_path / "corpus"), "text")
    assert stop.value.code == (
        f"error: data path {tmp_path / 'corpus'} holds {tmp_path / 'corpus' / 'locked'}, which cannot be read "
        f"(Permission denied)\nhint: make it readable, or move it out of {tmp_path / 'corpus'}"
    )
    monkeypatch.undo()
    monkeypatch.setattr(Path, "read_bytes", lambda path: refuse(path, read_bytes))
    with pytest.raises(SystemExit) as stop:
        data.read_documents("text", str(tmp_path / "corpus" / "a.txt"), "text")
    assert stop.value.code == f"error: data file {tmp_path / 'corpus' / 'a.txt'} cannot be read (Permission denied)"


def test_corpus_files_say_what_is_wrong_with_them(tmp_path: Path) -> None:
    """A byte order mark is read past; a bad byte is placed by line; a compressed file is named as
    one (not sent to iconv); a JSON error says "at" once; a glob is said not to be one."""
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfTo be\r\nor not\n")
    assert data.read_documents("text", str(bom), "text") == ["To be\nor not\n"]
    bom.write_bytes(b'\xef\xbb\xbf{"text": "to be"}\n')
    assert data.read_documents("jsonl", str(bom), "text") == ["to be"]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"\xef\xbb\xbfone\ntwo\ncaf\xe9\n")
    with pytest.raises(SystemExit, match=r"is not UTF-8 text \(invalid continuation byte at line 3, byte 14\)\n"):
        data.read_documents("text", str(latin1), "text")
    for name, content in [("corpus.jsonl.gz", gzip.compress(b"{}")), ("corpus.jsonl", gzip.compress(b"{}"))]:
        (tmp_path / "packed").mkdir(exist_ok=True)
        packed = tmp_path / "packed" / name
        packed.write_bytes(content)
        with pytest.raises(SystemExit) as stop:
            data.read_documents("jsonl", str(tmp_path / "packed"), "text")
        assert stop.value.code == (
            f"error: data file {packed} is gzip-compressed, not text\n"
            f"hint: move it out of {tmp_path / 'packed'}, or decompress it (with gunzip)"
        )
        packed.unlink()
    (tmp_path / "xz.txt.xz").write_bytes(b"\x00\xff")  # by its name alone
    with pytest.raises(SystemExit, match=r"xz\.txt\.xz is xz-compressed, not text\nhint: decompress it \(with unxz\)$"):
        data.read_documents("text", str(tmp_path / "xz.txt.xz"), "text")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "to be\n')
    with pytest.raises(
        SystemExit, match=r"broken\.jsonl:1: not valid JSON \(Unterminated string starting at column 10\)"
    ):
        data.read_documents("jsonl", str(broken), "text")
    with pytest.raises(SystemExit) as stop:
        data.read_documents("text", str(tmp_path / "*.txt"), "text")
    assert stop.value.code == (
        f"error: data path {tmp_path / '*.txt'} does not exist\n"
        "hint: data.path is not a glob pattern (*, ? and [ are not expanded): point it at a directory"
    )


def test_a_sentencepiece_vocabulary_too_small_to_train_is_a_spec_error() -> None:
    config = SimpleNamespace(tokenizer="sentencepiece", vocab_size=101, spm_model=None, objective="prefix_lm")
    problem = data.shape_problem(config)
    assert problem is not None and problem[0] == "model.vocab_size"
    assert "needs vocab_size >= 104" in problem[1]
    assert (
        data.shape_problem(
            SimpleNamespace(**{**vars(config), "vocab_size": 104, "inputs_length": 8, "targets_length": 8})
        )
        is None
    )


def test_a_data_path_may_start_at_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "corpus.txt").write_text("To be, or not to be.\n")
    assert data.read_documents("text", "~/corpus.txt", "text") == ["To be, or not to be.\n"]
    with pytest.raises(SystemExit, match=f"error: SentencePiece model {tmp_path / 'none.model'} does not exist$"):
        data.tokenizer_for(SimpleNamespace(tokenizer="sentencepiece", spm_model="~/none.model", vocab_size=512), [])


def test_a_sentencepiece_model_path_naming_a_directory_says_so(tmp_path: Path) -> None:
    """It used to say the directory "does not exist"."""
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "corpus.model").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        data.tokenizer_for(
            SimpleNamespace(tokenizer="sentencepiece", spm_model=str(tmp_path / "spm"), vocab_size=512), []
        )
    assert stop.value.code == (
        f"error: SentencePiece model {tmp_path / 'spm'} is a directory (it holds corpus.model)\n"
        "hint: set data.spm_model to the .model file itself"
    )


def test_a_file_that_is_not_a_sentencepiece_model_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("sentencepiece")
    bogus = tmp_path / "bogus.model"
    bogus.write_text("not a model\n")
    with pytest.raises(SystemExit) as stop:
        data.tokenizer_for(config(tokenizer="sentencepiece", spm_model=str(bogus)), [])
    assert stop.value.code == f"error: {bogus} is not a SentencePiece model (its bytes do not parse as one)"


def test_a_split_too_small_for_one_example_names_itself_and_the_setting(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("To be, or not to be: that is the question.\n" * 40)
    small = {"source": "text", "path": str(tmp_path / "tiny.txt"), "eval_fraction": 0.00001}
    with pytest.raises(SystemExit) as stop:
        data.dataset(config(**small), "eval")
    said = str(stop.value.code)
    assert said.startswith("error: the held-out split (data.eval_fraction 1e-05 of the corpus) has ")
    assert "hint: raise data.eval_fraction, or evaluate never (--eval-every 0)" in said
    with pytest.raises(SystemExit, match=r"the training split of the corpus has \d+ tokens, fewer than the "):
        data.dataset(config(**small, inputs_length=4096, targets_length=1024))


def test_short_inputs_hold_whole_corrupted_examples_or_are_refused() -> None:
    """Under 10 tokens a sentinel and EOS no longer fit beside as many raw tokens: fewer are taken,
    so EOS ends every input (it used to be cut off); under 3 nothing fits."""
    for length in (3, 5, 9):
        examples = data.dataset(config(inputs_length=length, targets_length=8))
        inputs = examples.batch(0, 4).inputs
        assert inputs.shape == (4, length)
        assert all(data.EOS in row for row in inputs.tolist()), inputs
    problem = data.shape_problem(config(inputs_length=2, targets_length=8))
    assert problem is not None and problem[0] == "train.inputs_length"
    assert (
        problem[1]
        == "span corruption needs inputs_length >= 3 (a clean token, a sentinel for a noise span, and EOS), not 2"
    )


def test_notes_are_said_by_the_first_rank_of_a_torchrun_job_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every rank builds the data: a note (the tokenizer trained or cached, ...) was printed once per rank."""
    monkeypatch.setattr(data, "_SAID", set())
    monkeypatch.setenv("RANK", "1")
    data._say("note: x")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(data, "_SAID", set())
    monkeypatch.setenv("RANK", "0")
    data._say("note: x")
    assert capsys.readouterr().err == "note: x\n"


def test_a_corpus_entry_that_cannot_be_looked_at_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subdirectory listed but not searchable: its stat() fails with EACCES (faked: tests run as
    root). It was a PermissionError traceback."""
    (tmp_path / "corpus" / "locked").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("text")
    stat = Path.stat

    def refusing(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", refusing)
    with pytest.raises(SystemExit) as stop:
        data.read_documents("text", str(tmp_path / "corpus"), "text")
    assert f"holds {tmp_path / 'corpus' / 'locked'}, which cannot be read (Permission denied)" in str(stop.value.code)


def test_a_cache_on_a_file_system_without_locks_trains_all_the_same(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """flock failing with ENOLCK (some NFS and FUSE mounts) was a traceback: no turns are taken."""
    fcntl = pytest.importorskip("fcntl")
    pytest.importorskip("sentencepiece")

    def no_locks(*args: Any) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    data.sentencepiece_tokenizer(corpus_slice(50_000), 300)
    assert "sentencepiece: trained" in capsys.readouterr().err


def test_an_empty_corpus_says_so(tmp_path: Path) -> None:
    """It said the held-out split had 0 tokens, and with --eval-every 0 that training had 1 tokens."""
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(SystemExit) as stop:
        data.dataset(config(source="text", path=str(tmp_path / "empty.txt")))
    assert str(stop.value.code).startswith(f"error: data.path {tmp_path / 'empty.txt'} holds no text\nhint: ")


def test_a_training_split_smaller_than_a_batch_is_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(data, "_SAID", set())
    (tmp_path / "small.txt").write_text("To be, or not to be: that is the question. " * 12)
    small = data.dataset(config(source="text", path=str(tmp_path / "small.txt"), eval_fraction=0.0))
    assert 0 < small.num_examples < 8
    said = capsys.readouterr()
    assert f"note: the training split holds {small.num_examples} example(s), fewer than a batch of 8" in (
        said.out + said.err
    )


def test_a_dataset_names_the_tokenizer_its_ids_come_from() -> None:
    """What checkpoints record of a run's data (a SentencePiece model's identity: test_second_call_uses_the_cache)."""
    assert data.ByteTokenizer(512).identity == "byte"
    assert data.dataset(config()).tokenizer == "byte"


def test_the_runs_seed_orders_the_training_examples_and_not_the_eval_ones(tmp_path: Path) -> None:
    """dataset(config, seed=N) is the program's --seed N: another order of training examples (it was
    the spec's train.seed whatever --seed said); the eval examples stay train.seed's, so runs of
    other seeds evaluate alike."""
    (tmp_path / "corpus.txt").write_text("".join(f"line {i} of the corpus, some words.\n" for i in range(3000)))
    settings = config(source="text", path=str(tmp_path / "corpus.txt"))
    spec_seed = data.dataset(settings).batch(0, 8)
    assert np.array_equal(data.dataset(settings, seed=0).batch(0, 8).inputs, spec_seed.inputs)
    assert not np.array_equal(data.dataset(settings, seed=7).batch(0, 8).inputs, spec_seed.inputs)
    held_out = data.dataset(settings, "eval").batch(0, 8)
    assert np.array_equal(data.dataset(settings, "eval", seed=7).batch(0, 8).inputs, held_out.inputs)
