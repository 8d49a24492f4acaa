"""REST datastores: a corpus tokenized with the target's tokenizer, indexed by a suffix array.

REST (He et al., "REST: Retrieval-Based Speculative Decoding", NAACL 2024) keeps a corpus as one
token array with its suffix array: every position, sorted by the text that starts there, so the
positions where a given token sequence occurs form one contiguous block found by binary search.
At each step the longest suffix of the context (16 tokens down to 2) that occurs in the corpus
is looked up and the tokens that followed its occurrences are the candidates.

File format (little-endian): the 8 bytes ``OPDSTOR1``, a uint64 header length, a JSON header,
zero padding to a multiple of 64 bytes, then ``tokens`` (int32 [n], -1 between documents) and
``suffixes`` (int32 or int64 [n], per the header). Both arrays are memory-mapped on load.
The suffix array orders suffixes by their first `sort_depth` tokens (ties by position), which is
exact for every query up to that length.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outpace.drafters.ngram import gather_rows
from outpace.errors import OutpaceError

MAGIC = b"OPDSTOR1"
ALIGN = 64
SEPARATOR = -1


@dataclass(frozen=True)
class DatastoreMeta:
    tokenizer: str  # the tokenizer's name (for messages)
    fingerprint: str  # tokenizer_fingerprint() of the tokenizer that made the tokens
    vocab_size: int  # one more than the largest token id allowed
    tokens: int  # length of the token array, separators included
    documents: int
    sort_depth: int
    source: str = ""  # what the corpus was (for `outpace datastore info`)
    suffix_dtype: str = "int32"
    version: int = 1


def suffix_array(tokens: np.ndarray, depth: int) -> np.ndarray:
    """Positions of `tokens` ([n] ints, -1 = separator) sorted by the suffix starting there,
    compared on at most `depth` tokens (ties keep position order). Prefix doubling: each round
    sorts by (rank of the first h tokens, rank of the next h), so ceil(log2(depth)) rounds."""
    n = tokens.shape[0]
    rank = tokens.astype(np.int64) + 1  # separator -> 0, token t -> t + 1; past the end sorts first
    order = np.argsort(rank, kind="stable")
    h = 1
    while h < depth and n > 1:
        top = int(rank.max()) + 2
        second = np.zeros(n, dtype=np.int64)
        second[: n - h] = rank[h:] + 1
        key = rank * top + second
        order = np.argsort(key, kind="stable")
        ks = key[order]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.cumsum(np.r_[0, ks[1:] != ks[:-1]])
        if int(rank[order[-1]]) == n - 1:
            break  # every suffix already distinct
        h *= 2
    return order


class Datastore:
    """A tokenized corpus and its suffix array, in memory or memory-mapped from a file."""

    def __init__(self, tokens: np.ndarray, suffixes: np.ndarray, meta: DatastoreMeta) -> None:
        self.tokens = tokens  # [n] int32
        self.suffixes = suffixes  # [n] int32 or int64
        self.meta = meta

    @classmethod
    def build(cls, documents: Iterable[Sequence[int]], sort_depth: int = 32, **meta: Any) -> Datastore:
        """Index token documents (each a sequence of ids); documents are kept apart by -1."""
        if sort_depth < 1:
            raise OutpaceError(f"sort_depth must be >= 1, got {sort_depth}")
        parts: list[np.ndarray] = []
        docs = 0
        for doc in documents:
            if len(doc):
                parts.extend([np.asarray(doc, dtype=np.int32), np.array([SEPARATOR], dtype=np.int32)])
                docs += 1
        if not docs:
            raise OutpaceError("the corpus has no tokens to index")
        tokens = np.concatenate(parts)
        if int(tokens.min()) < SEPARATOR:
            raise OutpaceError("token ids must be >= 0")
        sa = suffix_array(tokens, sort_depth)
        dtype = "int32" if tokens.shape[0] < 2**31 else "int64"
        vocab = int(meta.pop("vocab_size", 0)) or int(tokens.max()) + 1
        info = DatastoreMeta(
            tokenizer=str(meta.pop("tokenizer", "")), fingerprint=str(meta.pop("fingerprint", "")),
            vocab_size=vocab, tokens=int(tokens.shape[0]), documents=docs, sort_depth=sort_depth,
            source=str(meta.pop("source", "")), suffix_dtype=dtype,
        )
        return cls(tokens, sa.astype(dtype), info)

    def save(self, path: str | Path) -> None:
        header = json.dumps(asdict(self.meta)).encode()
        start = _aligned(len(MAGIC) + 8 + len(header))
        with open(path, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            f.write(b"\0" * (start - f.tell()))
            f.write(self.tokens.astype("<i4").tobytes())
            f.write(b"\0" * (_aligned(f.tell()) - f.tell()))
            f.write(self.suffixes.astype("<i4" if self.meta.suffix_dtype == "int32" else "<i8").tobytes())

    @classmethod
    def load(cls, path: str | Path) -> Datastore:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise OutpaceError(f"{path} is not an outpace datastore (make one with `outpace datastore build`)")
                size = int.from_bytes(f.read(8), "little")
                meta = DatastoreMeta(**json.loads(f.read(size)))
        except OSError as err:
            raise OutpaceError(f"cannot read datastore {path}: {err.strerror}") from None
        except (ValueError, TypeError) as err:
            raise OutpaceError(f"datastore {path} has a corrupt header: {err}") from None
        start = _aligned(len(MAGIC) + 8 + size)
        n = meta.tokens
        tokens = np.memmap(path, dtype="<i4", mode="r", offset=start, shape=(n,))
        sdt = "<i4" if meta.suffix_dtype == "int32" else "<i8"
        suffixes = np.memmap(path, dtype=sdt, mode="r", offset=_aligned(start + 4 * n), shape=(n,))
        return cls(tokens, suffixes, meta)

    @property
    def nbytes(self) -> int:
        return int(self.tokens.nbytes + self.suffixes.nbytes)

    def match(self, query: Sequence[int]) -> tuple[int, int]:
        """[lo, hi): the suffix-array block of the positions where `query` occurs."""
        m, q = len(query), [int(t) for t in query]
        if m > self.meta.sort_depth:
            raise OutpaceError(f"query of {m} tokens exceeds the datastore's sort depth {self.meta.sort_depth}")
        toks, sa = self.tokens, self.suffixes

        def key(i: int) -> list[int]:
            s = int(sa[i])
            return toks[s : s + m].tolist()

        everything = range(sa.shape[0])
        lo = bisect_left(everything, q, key=key)
        return lo, bisect_right(everything, q, lo=lo, key=key)

    def longest_match(self, tail: Sequence[int], max_n: int, min_n: int) -> tuple[int, int, int]:
        """(n, lo, hi) for the longest suffix of `tail` (min_n <= n <= max_n) in the corpus; a
        suffix that occurs has every shorter suffix occurring too, so n is found by bisection.
        n == 0 when none occurs."""
        hi_n = min(max_n, len(tail), self.meta.sort_depth)
        if hi_n < min_n:
            return 0, 0, 0
        best = (0, 0, 0)
        lo_n = min_n
        while lo_n <= hi_n:
            mid = (lo_n + hi_n) // 2
            lo, hi = self.match(tail[len(tail) - mid :])
            if hi > lo:
                best, lo_n = (mid, lo, hi), mid + 1
            else:
                hi_n = mid - 1
        return best

    def retrieve(self, tail: Sequence[int], max_n: int, min_n: int, length: int, limit: int) -> tuple[np.ndarray, int]:
        """Continuations (`length` tokens, -1 padded at document ends) of the occurrences of the
        longest matching suffix of `tail`: ([k, length] int64 with k <= limit, that suffix's
        length or 0). When there are more than `limit` occurrences, an evenly spaced sample of
        the block (which is sorted by continuation, so the sample keeps every frequent
        continuation's share)."""
        n, lo, hi = self.longest_match(tail, max_n, min_n)
        if n == 0:
            return np.empty((0, length), dtype=np.int64), 0
        idx = np.arange(lo, hi) if hi - lo <= limit else np.linspace(lo, hi - 1, limit).astype(np.int64)
        starts = self.suffixes[idx].astype(np.int64) + n
        return gather_rows(self.tokens, starts, length), n


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


# ---------------------------------------------------------------------------- corpora and tokenizers

TEXT_FIELDS = ("text", "content", "turns", "conversations", "messages", "output", "completion")


def read_corpus(paths: Sequence[str | Path], field: str | None = None) -> Iterator[str]:
    """Documents of a corpus: a .jsonl file gives the text field of each record (`field`, or
    the first of TEXT_FIELDS present; a list of strings or of chat messages gives one document
    per entry), a .json file a list of such records, any other file is one document."""
    for path in map(Path, paths):
        try:
            if path.suffix == ".jsonl":
                with open(path, encoding="utf-8") as f:
                    for number, line in enumerate(f, 1):
                        if line.strip():
                            yield from _record_texts(_json(line, path, number), field, path)
            elif path.suffix == ".json":
                records = _json(path.read_text(encoding="utf-8"), path, 1)
                for record in records if isinstance(records, list) else [records]:
                    yield from _record_texts(record, field, path)
            else:
                yield path.read_text(encoding="utf-8")
        except OSError as err:
            raise OutpaceError(f"cannot read corpus file {path}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise OutpaceError(f"corpus file {path} is not UTF-8 text") from None


def _json(text: str, path: Path, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise OutpaceError(f"{path}:{line}: not valid JSON ({err.msg})") from None


def _record_texts(record: Any, field: str | None, path: Path) -> Iterator[str]:
    if isinstance(record, str):
        yield record
        return
    if not isinstance(record, dict):
        raise OutpaceError(f"{path}: records must be JSON objects or strings")
    name = field or next((f for f in TEXT_FIELDS if f in record), None)
    if name is None or name not in record:
        wanted = repr(field) if field else f"one of {', '.join(TEXT_FIELDS)}"
        raise OutpaceError(f"{path}: a record has no field {wanted}; choose one with --field")
    value = record[name]
    for item in value if isinstance(value, list) else [value]:
        text = item.get("content", item.get("value", item.get("text"))) if isinstance(item, dict) else item
        if isinstance(text, str) and text:
            yield text


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of a tokenizer's vocabulary (token string -> id)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256("\n".join(f"{i}\t{t}" for t, i in vocab).encode()).hexdigest()[:16]


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a model spec, without loading the model's weights."""
    from transformers import AutoTokenizer

    from outpace import models

    source = models.resolve(spec)
    if source.kind == "gguf":
        stem = Path(source.path_or_id).stem
        done = sorted((models.cache_dir() / "converted").glob(f"{stem}-*/.complete"))
        if done:
            return AutoTokenizer.from_pretrained(str(done[0].parent))
        return AutoTokenizer.from_pretrained(str(source.directory), gguf_file=source.gguf_file)
    return AutoTokenizer.from_pretrained(source.path_or_id)


def tokenize(tokenizer: Any, texts: Iterable[str], batch: int = 256) -> Iterator[list[int]]:
    """Token ids of each text (no special tokens), tokenized in batches."""
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == batch:
            yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]
            chunk = []
    if chunk:
        yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]


def check_compatible(store: Datastore, tokenizer: Any, vocab_size: int, where: str, target: str) -> None:
    """Raise OutpaceError unless `store` was made with this tokenizer and fits the vocabulary."""
    if store.meta.vocab_size > vocab_size:
        raise OutpaceError(
            f"datastore {where} holds token ids up to {store.meta.vocab_size - 1}, beyond {target}'s "
            f"vocabulary of {vocab_size}"
        )
    if tokenizer is not None and store.meta.fingerprint:
        mine = tokenizer_fingerprint(tokenizer)
        if mine != store.meta.fingerprint:
            raise OutpaceError(
                f"datastore {where} was built with the tokenizer of {store.meta.tokenizer or 'another model'}, "
                f"not {target}'s; rebuild it: outpace datastore build CORPUS --target {target} --out FILE"
            )
