"""Load test of `outpace serve` on loopback, written up in benchmarks/serve/load-test.md.

Starts `outpace serve` on a free 127.0.0.1 port (or uses --url), asks each prompt once from a
single client (the reference), then sends --requests greedy streaming chat requests,
--concurrency at a time, and checks every output equals the reference for its prompt. Reports
requests/s, p50/p95 latency and time to first token, tokens/s, the server's RSS after warm-up
and at the end, and the server's own speculation metrics.

    python benchmarks/serve/load_test.py --target smollm2-135m --drafter prompt-lookup --dtype float32
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from outpace.serve.loadtest import LoadReport, reference_outputs, run_load

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain in two sentences what a hash map is.",
    "Repeat this list, one item per line, with a dash before each: apples, pears, plums, cherries, figs.",
    ("Rename the variable x to count in this code and show the result:\n"
     "def f(items):\n    x = 0\n    for i in items:\n        x += i\n    return x"),
    "What is the capital of France? Answer in one sentence.",
    "Give three tips for writing clear commit messages.",
    "Translate to French: The cat sleeps on the warm windowsill.",
    ("Summarize: Speculative decoding lets a small drafter propose tokens that a large model "
     "verifies in one forward pass, so output is unchanged but faster."),
]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    server = None if args.url else start_server(args)
    url = args.url or server[1]  # type: ignore[index]
    pid = None if server is None else server[0].pid
    try:
        figures = asyncio.run(measure(url, args, pid))
    finally:
        if server is not None:
            stop_server(server[0])
    text = render(args, figures)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0 if figures["mismatches"] == 0 and figures["report"].statuses == {200: args.requests} else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an already running server (default: start one)")
    p.add_argument("--target", default="smollm2-135m")
    p.add_argument("--drafter", default="prompt-lookup")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--model", default="bench", help="the served model id")
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument("--run-timeout", type=float, default=3600.0)
    p.add_argument("--out", default=str(HERE / "load-test.md"))
    p.add_argument("--note", default="", help="a line on the conditions of the run, put in the report")
    return p


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "outpace.cli", "serve", "--target", args.target, "--drafter", args.drafter,
           "--dtype", args.dtype, "--threads", str(args.threads), "--host", LOOPBACK, "--port", str(port),
           "--max-queue", str(args.concurrency), "--model-name", args.model, "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"outpace serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("outpace serve did not come up in 10 minutes")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def measure(url: str, args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    expected = await reference_outputs(url, args.model, PROMPTS, args.max_tokens, timeout=args.request_timeout)
    rss_warm = rss(pid)
    report = await run_load(url, args.model, PROMPTS, args.requests, args.concurrency, args.max_tokens,
                            args.request_timeout, args.run_timeout)
    mismatches = sum(o.text != expected[o.prompt].text for o in report.ok)
    async with httpx.AsyncClient(timeout=30) as client:
        metrics = (await client.get(f"{url}/metrics")).text
    return {"report": report, "mismatches": mismatches, "rss_warm": rss_warm, "rss_end": rss(pid),
            "metrics": _pick(metrics), "single": [o.latency_s for o in expected]}


def rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def _pick(metrics: str) -> dict[str, str]:
    keep = ("outpace_mean_accepted_tokens_per_step", "outpace_acceptance_rate", "outpace_tokens_per_second",
            "outpace_generations_cancelled_total", "outpace_requests_rejected_total", "outpace_errors_total")
    out = {}
    for line in metrics.splitlines():
        if line.startswith(keep):
            key, _, value = line.rpartition(" ")
            out[key] = value
    return out


def render(args: argparse.Namespace, f: dict[str, Any]) -> str:
    r: LoadReport = f["report"]
    s = r.summary()
    mib = lambda b: "n/a" if b is None else f"{b / 2**20:.0f} MiB"
    single = sorted(f["single"])
    lines = [
        "# `outpace serve` load test",
        "",
        (f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/serve/load_test.py` "
         f"on {platform.machine()} with {os.cpu_count()} CPU cores, Python {platform.python_version()}."),
        *([args.note] if args.note else []),
        "",
        "| setting | value |",
        "| --- | --- |",
        f"| target | `{args.target}` ({args.dtype}, {args.threads} threads) |",
        f"| drafter | `{args.drafter}` |",
        f"| requests | {args.requests} greedy streaming chat requests, {len(PROMPTS)} distinct prompts |",
        f"| concurrency | {args.concurrency} clients on loopback |",
        f"| max_tokens | {args.max_tokens} |",
        "",
        "| result | value |",
        "| --- | --- |",
        f"| answered | {s['succeeded']} / {s['requests']} (statuses {s['statuses']}) |",
        f"| outputs equal to the single-client output | {s['succeeded'] - f['mismatches']} / {s['succeeded']} |",
        f"| wall time | {s['wall_s']} s |",
        f"| requests/s | {s['requests_per_s']} |",
        f"| latency p50 / p95 | {s['latency_p50_s']} s / {s['latency_p95_s']} s |",
        f"| time to first token p50 / p95 | {s['first_token_p50_s']} s / {s['first_token_p95_s']} s |",
        f"| single-client latency (median, reference pass) | {single[len(single) // 2]:.3f} s |",
        f"| completion tokens | {s['completion_tokens']} |",
        f"| tokens/s (all clients) | {s['tokens_per_s']} |",
        f"| server RSS after warm-up / at the end | {mib(f['rss_warm'])} / {mib(f['rss_end'])} |",
        "",
        "Server metrics at the end (`GET /metrics`):",
        "",
        "```",
        *(f"{k} {v}" for k, v in f["metrics"].items()),
        "```",
        "",
        "One generation runs at a time (the decoder's caches are per generation), so throughput is",
        "the single-stream decoding speed and latency grows with the queue: with C clients, a",
        "request waits for about C - 1 others. Every request is bounded by a timeout and the run by",
        "another; a mismatch or an unanswered request makes the script exit non-zero.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
