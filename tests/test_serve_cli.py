"""`outpace serve` from the command line: light help, argument errors before any loading, and
the real command serving a tiny model on a loopback port until interrupted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from test_serve_harness import LOOPBACK, parse_metrics, tiny_dir  # noqa: F401

from outpace.cli import main


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from outpace.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = ('torch', 'transformers', 'fastapi', 'uvicorn', 'pydantic', 'openai')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--max-queue" in done.stdout and "--draft-length" in done.stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--port", "70000"], "at most 65535"),
        (["--port", "http"], "expected an integer"),
        (["--max-queue", "-1"], ">= 0"),
        (["--draft-length", "-2"], ">= 0"),
        (["--max-tokens", "0"], ">= 1"),
    ],
)
def test_bad_arguments_fail_before_loading(args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--target", "no-such-model", *args])
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


def test_unknown_target_is_a_clean_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--target", str(tmp_path / "missing.gguf"), "--drafter", "none"]) == 2
    assert "no such model file" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tiny_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:  # noqa: F811
    port = free_port()
    cmd = [sys.executable, "-m", "outpace.cli", "serve", "--target", str(tiny_dir), "--drafter", "prompt-lookup",
           "--dtype", "float32", "--threads", "1", "--port", str(port), "--max-queue", "2",
           "--model-name", "tiny-cli", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "outpace serve did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_the_serve_command_serves_until_interrupted(served: tuple[subprocess.Popen[str], str], tiny_dir: Path) -> None:  # noqa: F811
    proc, url = served
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        assert [m.id for m in client.models.list()] == ["tiny-cli"]
        resp = client.chat.completions.create(model="tiny-cli", messages=[{"role": "user", "content": "w5 w6 w7"}],
                                              max_tokens=8, temperature=0)
        assert resp.usage.completion_tokens == 8 and resp.choices[0].message.content
        by_dir_name = client.chat.completions.create(model=tiny_dir.name, max_tokens=8, temperature=0,
                                                     messages=[{"role": "user", "content": "w5 w6 w7"}])
        assert by_dir_name.choices[0].message.content == resp.choices[0].message.content
    metrics = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
    assert metrics["outpace_queue_capacity"] == 2
    assert metrics['outpace_info{model="tiny-cli",drafter="prompt-lookup",version="0.1.0"}'] == 1
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "serving model 'tiny-cli'" in err


@pytest.mark.slow
def test_the_load_test_script_end_to_end(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "serve" / "load_test.py"
    out = tmp_path / "load-test.md"
    done = subprocess.run(
        [sys.executable, str(script), "--target", str(tiny_dir), "--threads", "1", "--requests", "24",
         "--concurrency", "8", "--max-tokens", "6", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = out.read_text()
    assert "| answered | 24 / 24 (statuses {200: 24}) |" in report
    assert "| outputs equal to the single-client output | 24 / 24 |" in report
