"""`outpace datastore`: build and inspect REST datastores. Parsing and printing only; the
tokenizer and numpy work happen inside the functions that run a command.

    outpace datastore build CORPUS... --target MODEL --out FILE [--field NAME]   tokenize + index
    outpace datastore info FILE                                                  describe a file

A datastore serves `--drafter rest:FILE`, `rasd:datastore=FILE` and `aded:FILE`.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice

DEFAULT_SORT_DEPTH = 32


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `datastore` command and its `build` and `info` subcommands."""
    from outpace.cli import DEFAULT_TARGET

    p = sub.add_parser(
        "datastore", help="build and inspect REST datastores (corpora for retrieval drafters)",
        description="A datastore is a corpus tokenized with the target's tokenizer and indexed by a "
        "suffix array; --drafter rest:FILE, rasd:datastore=FILE and aded:FILE draft from it.",
    )
    p.set_defaults(run=lambda args: _usage(p))
    dsub = p.add_subparsers(title="datastore commands")
    b = dsub.add_parser(
        "build", help="tokenize a corpus with the target's tokenizer and index it",
        description="Each plain-text file is one document; a .jsonl file gives one or more documents per "
        "record (the field given by --field, else the first of text, content, turns, conversations, "
        "messages, output, completion; lists of strings or chat messages give one document each); a "
        ".json file holds a list of such records.",
    )
    b.add_argument("corpus", nargs="+", help="corpus files: .txt (or any text), .jsonl, .json")
    b.add_argument("--target", default=DEFAULT_TARGET,
                   help=f"model whose tokenizer to use (default {DEFAULT_TARGET})")
    b.add_argument("--out", required=True, help="datastore file to write")
    b.add_argument("--field", default=None, help="JSON field holding the text")
    b.add_argument("--max-documents", type=int, default=None, help="index at most this many documents")
    b.add_argument("--sort-depth", type=int, default=DEFAULT_SORT_DEPTH,
                   help=f"suffixes are ordered on this many tokens; longest usable query (default {DEFAULT_SORT_DEPTH})")
    b.set_defaults(run=_run_build)
    i = dsub.add_parser("info", help="describe a datastore file")
    i.add_argument("file")
    i.set_defaults(run=_run_info)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _run_build(args: argparse.Namespace) -> int:
    from outpace.datastore import (
        Datastore,
        load_tokenizer,
        read_corpus,
        tokenize,
        tokenizer_fingerprint,
    )
    from outpace.errors import OutpaceError

    if args.sort_depth < 1:
        raise OutpaceError(f"--sort-depth must be >= 1, got {args.sort_depth}")
    if args.max_documents is not None and args.max_documents < 1:
        raise OutpaceError(f"--max-documents must be >= 1, got {args.max_documents}")
    t0 = time.perf_counter()
    print(f"outpace: loading the tokenizer of {args.target} ...", file=sys.stderr)
    tok = load_tokenizer(args.target)
    texts = read_corpus(args.corpus, args.field)
    if args.max_documents is not None:
        texts = islice(texts, args.max_documents)
    store = Datastore.build(
        tokenize(tok, texts), sort_depth=args.sort_depth, tokenizer=args.target,
        fingerprint=tokenizer_fingerprint(tok), vocab_size=len(tok), source=", ".join(args.corpus),
    )
    store.save(args.out)
    m = store.meta
    print(f"outpace: {m.tokens - m.documents} tokens from {m.documents} documents -> {args.out} "
          f"({store.nbytes / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from outpace.datastore import Datastore

    m = Datastore.load(args.file).meta
    print(f"{args.file}: {m.tokens - m.documents} tokens in {m.documents} documents, tokenizer of "
          f"{m.tokenizer or '?'} ({m.fingerprint or 'no fingerprint'}), vocabulary {m.vocab_size}, "
          f"sort depth {m.sort_depth}, from {m.source or '?'}")
    return 0
