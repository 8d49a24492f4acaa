"""Command-line front end. Parsing and printing only; the work happens in the library."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from outpace.errors import OutpaceError

DEFAULT_TARGET = "qwen2.5-coder-1.5b"
DEFAULT_DRAFTER = "draft-model:qwen2.5-coder-0.5b"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except OutpaceError as err:
        print(f"outpace: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("outpace: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outpace", description="Lossless speculative decoding.")
    sub = p.add_subparsers(title="commands")
    _add_generate(sub.add_parser("generate", help="generate text, speculatively"))
    models = sub.add_parser("models", help="fetch and list the packaged models")
    msub = models.add_subparsers(title="models commands")
    fetch = msub.add_parser("fetch", help="install and assemble packaged models (all by default)")
    fetch.add_argument("names", nargs="*", help="short names; default: all packaged models")
    fetch.set_defaults(run=_run_models_fetch)
    quant = msub.add_parser(
        "quantize", help="write a GGUF model in another llama.cpp weight format (cached; prints the path)",
        description="Requantize a packaged model or GGUF file for the llama.cpp backend, once. A different "
        "format is a different target model: compare it with llama-cpp-ar on the same file "
        "(outpace bench --backend llama.cpp --target PATH --methods ar,llama-cpp-ar,...).")
    quant.add_argument("name", help="packaged short name or GGUF file")
    quant.add_argument("--format", required=True, choices=["q4_0", "q8_0", "q4_k_m"])
    quant.set_defaults(run=_run_models_quantize)
    msub.add_parser("list", help="show packaged models and whether they are present").set_defaults(
        run=_run_models_list
    )
    for module in PLUGGED:
        importlib.import_module(module).register(sub)
    return p


# Commands that live in their own packages; each module has register(subparsers) and keeps
# its heavy imports inside the function it runs.
PLUGGED = ["outpace.bench.cli", "outpace.serve.cli", "outpace.datastore_cli", "outpace.analysis_cli"]


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Options that choose the models; shared by generate, bench and serve."""
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"target model (default {DEFAULT_TARGET})")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "llama.cpp"],
                   help="torch (transformers models) or llama.cpp (GGUF files; fastest on a CPU); auto "
                   "(default): llama.cpp for a GGUF target when llama-cpp-python is installed and there is no "
                   "GPU and no --quant, else torch")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32", "float16"],
                   help="torch backend only; auto (default): bfloat16 on a GPU or a CPU with native bf16 "
                   "(avx512_bf16, AMX), else float32, which is as fast as emulated bf16 and exact")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument(
        "--quant",
        default=None,
        help="weight-only quantization of the target: int8, int4 (group 128) or int4gN; a "
        "quantized target is a different model (outputs are compared with its own AR output)",
    )


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--draft-length", type=int, default=4, help="draft tokens (or tree nodes) per step; "
                   "with --adaptive, the most per step")
    p.add_argument("--adaptive", action="store_true",
                   help="choose each step's draft length (0 = plain decoding) from the measured cost "
                   "of verifying k tokens and the acceptance seen so far")


def _add_generate(p: argparse.ArgumentParser) -> None:
    add_engine_args(p)
    p.add_argument(
        "--drafter",
        default=DEFAULT_DRAFTER,
        help="none | prompt-lookup[:max_ngram=3,min_ngram=1,branches=1] | "
        "draft-model:MODEL[,quant=int8|int4] | recycling | aded[:DATASTORE] | stand | "
        "rest[:DATASTORE] | rasd[:draft=MODEL,datastore=FILE] | spectr:MODEL[,k=2,depth=4] | "
        "rsd:MODEL[,method=gumbel|beam] | dyspec:MODEL[,budget=N] (tree drafters take "
        f"--draft-length as their node budget, e.g. 16-80; default {DEFAULT_DRAFTER})",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--chat", help="a user message, formatted with the model's chat template")
    src.add_argument("--prompt", help="raw text to continue (no chat template)")
    src.add_argument("--prompt-file", help="raw text to continue, read from a file ('-' = stdin)")
    add_sampling_args(p)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON record instead of streaming")
    p.set_defaults(run=_run_generate)


def engine_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The EngineSpec of the engine options, with auto backend and dtype resolved."""
    from outpace.engine import EngineSpec, resolve_backend
    from outpace.hardware import resolve_dtype

    backend = resolve_backend(args.backend, args.target, args.quant)
    return EngineSpec(args.target, args.drafter, resolve_dtype(args.dtype), args.quant, backend=backend)


def sampling_from(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from outpace.decoder import GenerationConfig
    from outpace.sampling import SamplingConfig

    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p, args.seed)
    return GenerationConfig(
        args.max_new_tokens, sampling, tuple(getattr(args, "stop", ())), args.draft_length,
        adaptive=args.adaptive,
    )


def _run_generate(args: argparse.Namespace) -> int:
    cfg = sampling_from(args)  # validates before the slow model load
    from outpace.backends.torch import set_threads
    from outpace.engine import build, engine_label

    set_threads(args.threads)
    spec = engine_spec(args)
    print(f"outpace: loading {args.target} ({engine_label(spec.backend, spec.dtype, spec.quant)}) with drafter {args.drafter} ...", file=sys.stderr)
    engine = build(spec)
    dec = engine.decoder
    if args.chat is not None:
        ids = dec.encode([{"role": "user", "content": args.chat}])
    else:
        text = args.prompt if args.prompt is not None else _read(args.prompt_file)
        ids = dec.encode(text, chat=False)
    if args.json:
        r = dec.generate(ids, cfg)
        record = {"target": engine.target.name, "drafter": args.drafter, "text": r.text,
                  "finish_reason": r.finish_reason, **r.stats.as_dict()}
        print(json.dumps(record))
        return 0
    for chunk in dec.stream(ids, cfg):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        if chunk.stats is not None:
            sys.stdout.write("\n")
            print(format_stats(chunk.stats, chunk.finish_reason), file=sys.stderr)
    return 0


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise OutpaceError(f"cannot read prompt file {path}: {err.strerror}") from None


def format_stats(stats, finish_reason: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """Two human-readable lines: throughput and acceptance, then where the time went."""
    acc = " ".join(f"{a:.2f}" for a in stats.acceptance_by_position) or "-"
    t = stats.total_s or 1.0

    def part(name: str, s: float) -> str:
        return f"{name} {s:.2f}s ({100 * s / t:.0f}%)"

    cached = f" ({stats.cached_tokens} prompt tokens were cached)" if stats.cached_tokens else ""
    return (
        f"[outpace] {stats.new_tokens} new tokens in {stats.total_s:.2f}s ({stats.tokens_per_s:.2f} tok/s), "
        f"{stats.steps} steps, tau {stats.tau:.2f}, acceptance by position {acc}, "
        f"finish {finish_reason}\n"
        f"[outpace] time: {part('prefill', stats.prefill_s)}{cached}, {part('draft', stats.draft_s)}, "
        f"{part('verify', stats.verify_s)}, {part('other', stats.other_s)}"
    )


def _run_models_fetch(args: argparse.Namespace) -> int:
    from outpace import models

    names = args.names or list(models.PACKAGED)
    for name in names:
        if name not in models.PACKAGED:
            raise OutpaceError(f"unknown packaged model {name!r}; known: {', '.join(models.PACKAGED)}")
    for name in names:
        path = models.fetch(name)
        print(f"{name}: {path}", file=sys.stderr)
    return 0


def _run_models_quantize(args: argparse.Namespace) -> int:
    from outpace.backends.llama_cpp import requantize

    print(requantize(args.name, args.format))
    return 0


def _run_models_list(args: argparse.Namespace) -> int:
    from outpace import models

    print(models.format_model_table(models.list_models()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
