"""Shared harness of the server tests: a tiny model saved to disk, engines built from it, and the
real uvicorn server run in a background thread on a free loopback port.

The other test_serve_* modules import from here (pytest puts tests/ on sys.path). The tests in
this module check the harness itself: that the server listens on loopback only and that a slow
engine is slow, since the concurrency tests rely on both.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_model, word_tokenizer

# Words are w0..w47; unknown words read as w0. w47 ends a sequence.
EOS = 47
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}w4 {% elif m['role'] == 'user' %}w1 {% else %}w2 {% endif %}"
    "{{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}w3{% endif %}"
)
LOOPBACK = "127.0.0.1"


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama and a word-level tokenizer with a chat template, saved to `path`."""
    backend = tiny_model(seed=seed)
    tokenizer = word_tokenizer(eos=EOS)
    tokenizer.chat_template = CHAT_TEMPLATE
    backend.model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


#: A prompt holding this token makes the poisoned backend raise (a stand-in for a model error).
POISON = 46


def build_engine(model_dir: Path, drafter: str = "prompt-lookup", step_delay: float = 0.0,
                 poison: bool = False, costs: bool = False) -> Any:
    """An Engine over the saved model, loaded afresh (servers never share a model).

    step_delay > 0: every target forward sleeps that long first, a stand-in for a big model, so
    generations last long enough to interrupt. poison: a forward over token POISON raises.
    costs: give the decoder a (made-up) cost model, for adaptive draft lengths."""
    from outpace.backends.torch import LoadedModel, TorchBackend, load
    from outpace.decoder import Decoder
    from outpace.engine import Engine, make_drafter
    from outpace.policies import CostModel

    class TestBackend(TorchBackend):
        def forward(self, cache: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            if poison and self.cache_len(cache) == 0 and POISON in tokens.tolist():  # the prompt only
                raise RuntimeError("simulated model failure")
            time.sleep(step_delay)
            return super().forward(cache, tokens, *args, **kwargs)

    loaded = load(str(model_dir), "float32")
    loaded = replace(loaded, backend=TestBackend(loaded.backend.model, loaded.name))
    loader = lambda spec, dtype, quant=None: load(spec, dtype, quant)
    drafter_obj = make_drafter(drafter, loaded, "float32", loader=loader)
    cost_model = CostModel({1: 1e-3, 2: 1.1e-3, 4: 1.3e-3, 8: 1.8e-3}) if costs else None
    decoder = Decoder(loaded.backend, loaded.tokenizer, drafter_obj, eos_ids=loaded.eos_ids, costs=cost_model)
    return Engine(decoder, LoadedModel(loaded.backend, loaded.tokenizer, loaded.name, loaded.eos_ids), drafter)


@dataclass
class RunningServer:
    """A uvicorn server in a background thread; `url` is its base address."""

    server: Any
    thread: threading.Thread
    port: int
    app: Any
    http: httpx.Client  # for the test's own thread

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.http.get("/metrics").text)


@contextlib.contextmanager
def run_server(engine: Any, **settings: Any) -> Iterator[RunningServer]:
    """Serve `engine` on a free loopback port until the block ends."""
    import uvicorn

    from outpace.serve.app import create_app
    from outpace.serve.service import ServeSettings

    app = create_app(engine, ServeSettings(model_id="tiny", **settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = sock.getsockname()[1]
    http = httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=30)
    try:
        yield RunningServer(server, thread, port, app, http)
    finally:
        http.close()
        server.should_exit = True
        thread.join(30)
        sock.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels exactly as rendered)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def chat_body(content: str = "w5 w6 w7", **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **extra}


# ----------------------------------------------------------------------------- fixtures


# Each test module imports these fixtures, which pytest would then set up once per module; the
# model and the fast server are instead made once per process and shared.
_SHARED: dict[str, Any] = {}


def _shared(key: str, make: Any) -> Any:
    if key not in _SHARED:
        _SHARED[key] = make()
    return _SHARED[key]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shared("tiny_dir", lambda: save_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def server(tiny_dir: Path) -> RunningServer:
    """A fast server with the prompt-lookup drafter and room for many waiting requests (one per
    process, stopped when the process exits)."""

    def start() -> RunningServer:
        context = run_server(build_engine(tiny_dir, costs=True), max_queue=128)
        running = context.__enter__()
        atexit.register(context.__exit__, None, None, None)
        return running

    return _shared("server", start)


# ----------------------------------------------------------------------------- harness checks


def test_server_listens_on_loopback_only(server: RunningServer) -> None:
    sockets = [s for srv in server.server.servers for s in srv.sockets]
    assert sockets and all(s.getsockname()[0] == LOOPBACK for s in sockets)
    assert server.http.get("/health").json()["status"] == "ok"


def test_slow_engine_is_slow(tiny_dir: Path) -> None:
    from outpace.decoder import GenerationConfig

    engine = build_engine(tiny_dir, step_delay=0.05)
    ids = engine.decoder.encode([{"role": "user", "content": "w5"}])
    start = time.perf_counter()
    engine.decoder.generate(ids, GenerationConfig(max_new_tokens=4, draft_length=0))
    assert time.perf_counter() - start >= 4 * 0.05
