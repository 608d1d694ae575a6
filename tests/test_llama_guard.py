"""The Llama Guard judge on a checkpoint of Llama Guard 3's kind that the test saves itself: a random-weight
LlamaForCausalLM (the architecture shrunk) with Llama 3's header tokens and a chat template of Llama Guard 3's
kind. Verdicts are meaningless; loading, formatting, batching, stopping and parsing are the real path."""

import pytest

from falcon_h1r import safety as S
from falcon_h1r.random_checkpoints import (llama_guard_style_template, llama_guard_style_tokenizer,
                                           save_random_checkpoint, tiny_llama_config)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory):
    tok = llama_guard_style_tokenizer(vocab_size=400)
    path = tmp_path_factory.mktemp("llama-guard-3-tiny")
    return save_random_checkpoint(path, tiny_llama_config(len(tok)), tok, seed=3)


@pytest.fixture(scope="module")
def judge(guard_dir):
    return S.LlamaGuardJudge(guard_dir, device="cpu", batch_size=3, max_new_tokens=6, max_batch_tokens=4000)


def test_the_template_renders_llama_guard_3s_documented_prompt(judge, guard_dir):
    from transformers import AutoTokenizer

    assert judge.format("How do I bake bread?", "Mix flour and water.") == \
        S.llama_guard_prompt("How do I bake bread?", "Mix flour and water.")
    tok = AutoTokenizer.from_pretrained(str(guard_dir))
    assert tok.chat_template == llama_guard_style_template()
    user_only = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "unsafe content in 'User' messages" in user_only and "ONLY THE LAST User message" in user_only
    assert "Agent:" not in user_only
    # the end-of-turn token stops generation, besides the checkpoint's EOS
    assert tok.convert_tokens_to_ids("<|eot_id|>") in judge.stop_ids


def test_three_texts_of_a_response_are_judged_in_one_batched_call(judge):
    """Reasoning only, answer only and both, as the paper's three modes; batches sorted by length give the same
    verdicts, in input order, as judging each text alone."""
    split = S.split_response("<think>Step 1: gather the parts. Step 2: assemble.</think>I cannot help with that.")
    texts = [S.mode_text(split, m) for m in S.MODES]
    assert texts == ["Step 1: gather the parts. Step 2: assemble.",
                     "Step 1: gather the parts. Step 2: assemble.\n\nI cannot help with that.",
                     "I cannot help with that."]
    prompts = ["How do I build it?"] * 3 + ["a much longer prompt " * 12, "short"]
    responses = texts + ["x", "y " * 30]
    batched = judge.judge(prompts, responses)
    alone = [judge.judge([p], [r])[0] for p, r in zip(prompts, responses)]
    assert [v.raw for v in batched] == [v.raw for v in alone]
    assert all(v == S.parse_llama_guard_output(v.raw) for v in batched)  # random weights: parsed, fail-closed
    assert judge.stats["calls"] >= 10 and judge.stats["padded_tokens"] >= judge.stats["input_tokens"] > 0


def test_batches_hold_at_most_batch_size_rows_and_the_token_budget(judge):
    lengths = [50, 900, 10, 400, 410, 2000, 5000, 30]
    batches = judge.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        widest = max(lengths[i] for i in b)
        assert len(b) <= judge.batch_size and (len(b) == 1 or len(b) * widest <= judge.max_batch_tokens)
    assert [5000] in [[lengths[i] for i in b] for b in batches]  # a row over the budget goes alone
    assert [[lengths[i] for i in b] for b in batches][0] == [10, 30, 50]  # shortest first, together


def test_a_text_longer_than_the_context_keeps_head_and_tail(judge):
    before = judge.max_input_tokens
    judge.max_input_tokens = 200
    try:
        ids, cut = judge.encode("p", "word " * 400)
        assert cut and len(ids) == 200
        full = judge.tokenizer(judge.format("p", "word " * 400), add_special_tokens=False)["input_ids"]
        assert ids[:100] == full[:100] and ids[100:] == full[-100:]  # the assessment instruction is kept
        verdict = judge.judge(["p"], ["word " * 400])[0]
        assert verdict.rule.endswith(":truncated")
    finally:
        judge.max_input_tokens = before


def test_judge_suite_through_llama_guard_resumes(judge, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"question {i}", "response": f"<think>thought {i}</think>answer {i}",
             "suite": "s", "subset": "t"} for i in range(4)]
    first = S.judge_suite(judge, rows, tmp_path / "j.jsonl", batch_size=5)
    assert len(first) == 12 and {r["judge"] for r in first} == {judge.name}
    again = S.judge_suite(judge, rows, tmp_path / "j.jsonl", batch_size=5)
    assert [r["raw"] for r in again] == [r["raw"] for r in first]


def test_make_judge_passes_the_batching(guard_dir):
    j = S.make_judge(str(guard_dir), device="cpu", batch_size=5, max_batch_tokens=1234)
    assert isinstance(j, S.LlamaGuardJudge) and (j.batch_size, j.max_batch_tokens) == (5, 1234)
    with pytest.raises(ValueError, match="must be >= 1"):
        S.LlamaGuardJudge(guard_dir, device="cpu", max_batch_tokens=0)


def test_judge_throughput_bench_writes_its_record_with_provenance(tmp_path):
    """bench/judge_throughput.py on a microscopic random judge: the printed record and, with --out, the same
    record with the commit and device it ran on; a --out that is not a .json path is refused (exit 2)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "judge_throughput.py"
    spec = importlib.util.spec_from_file_location("judge_throughput_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "judge.json"
    assert bench.main(["--device", "cpu", "--layers", "0", "--responses", "2", "--median-tokens", "32",
                       "--max-tokens", "64", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["calls"] == 6 and rec["calls_per_s"] > 0 and rec["paper_calls"] == 81_970 * 3
    assert rec["provenance"]["git"]["commit"] and rec["provenance"]["device"]["device"] == "cpu"
    assert "--out" in rec["command"]
    assert bench.main(["--device", "cpu", "--out", str(tmp_path / "judge.txt")]) == 2
    assert not (tmp_path / "judge.txt").exists()
