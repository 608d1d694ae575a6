"""The paper preset's path on files the tests save themselves: a tiny random Falcon-H1 checkpoint in the Hugging
Face format with a tokenizer and chat template of the real kind, a random Llama Guard 3 of its kind, the
package's fixture benchmarks and a local copy of every safety subset (``scripts/paper_smoke.py`` writes them).

Checked: the checkpoint is the base every section uses, through its own chat template (the one prompt builder);
the paper's benchmarks are read from the local copies and run with each one's protocol; answers are graded on
the builder's answer split; absent files stop a run at once with one message naming them; every notebook runs
at ``--preset paper`` (slow).
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import paper_smoke  # noqa: E402

from falcon_h1r.benchmarks import load_benchmark  # noqa: E402
from falcon_h1r.config import GenerationConfig, load_preset  # noqa: E402
from falcon_h1r.evaluation import benchmark_generation, score_completions  # noqa: E402
from falcon_h1r.inference import Completion  # noqa: E402
from falcon_h1r.prompts import PAPER_SYSTEM_PROMPT, PromptBuilder, load_prompt_builder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def smoke_files(tmp_path_factory):
    return paper_smoke.write_smoke_files(tmp_path_factory.mktemp("paper_files"), layers=0, guard_layers=0,
                                         device="cpu")


@pytest.fixture(scope="module")
def overrides(smoke_files):
    return paper_smoke.smoke_overrides(smoke_files, device="cpu")


# ============================================================================== the checkpoint is the base
def test_the_checkpoint_base_prompts_through_its_own_chat_template(overrides, tmp_path):
    from falcon_h1r.sections.common import get_base_model, get_tokenizer

    cfg = load_preset("paper", overrides)
    base = get_base_model(cfg, root=tmp_path, progress=False)
    builder = base.tokenizer
    assert isinstance(builder, PromptBuilder)
    expected = builder.hf.apply_chat_template(
        [{"role": "system", "content": PAPER_SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+2?"}],
        tokenize=False, add_generation_prompt=True)
    assert builder.prompt("What is 2+2?") == expected  # what every section's tok.prompt(question) now gives
    assert expected.startswith("<|begin_of_text|><|im_start|>system\n") and expected.endswith("assistant\n<think>\n")
    assert get_tokenizer(cfg).prompt("What is 2+2?") == expected
    im_end = builder.hf.convert_tokens_to_ids("<|im_end|>")
    assert builder.eos_id == builder.stop_token_ids[0] == im_end
    assert im_end in base.model.generation_config.eos_token_id
    assert base.info["checkpoint"] and base.info["params"] == sum(p.numel() for p in base.model.parameters())
    assert base.info["thinking_markers"] == ["<think>", "</think>"] and base.info["prompt_opens_thinking"]
    # the paper's benchmarks are the test split (eval.benchmark_limit of each), the synthetic tasks the train split
    test = base.sets["test"]
    assert base.info["benchmarks"] == {name: 2 for name in paper_smoke.BENCHMARKS}
    assert len({p["id"] for p in test}) == len(test) == 2 * len(paper_smoke.BENCHMARKS)
    assert {p["domain"] for p in test} == {"math", "science", "code"}
    assert base.sets["train"] and all("benchmark" not in p for p in base.sets["train"])


def test_files_absent_stop_the_paper_preset_with_one_message_naming_them(tmp_path, capsys):
    from falcon_h1r.cli import main
    from falcon_h1r.sections.common import run_mode
    from falcon_h1r.sections.local_files import LocalFilesMissing, require_local_files

    ckpt, bench = tmp_path / "Falcon-H1R-7B", tmp_path / "benchmarks"
    cfg = load_preset("paper", {"device": "cpu", "model.checkpoint": str(ckpt), "tokenizer.path": None,
                                "eval.benchmark_dir": str(bench)})
    with pytest.raises(LocalFilesMissing) as info:
        run_mode(cfg)  # never "render": the run stops here
    message = str(info.value)
    assert f"{ckpt} does not exist" in message and "huggingface-cli download tiiuae/Falcon-H1R-7B" in message
    for name in cfg.eval.benchmarks:
        assert f"benchmark {name} (eval.benchmark_dir): {bench / name} does not exist" in message
    assert "Nothing is downloaded" in message
    with pytest.raises(LocalFilesMissing) as info:
        require_local_files(cfg, ["06_safety", "03_rl"])
    message = str(info.value)
    assert "Llama Guard checkpoint (safety.judge): checkpoints/Llama-Guard-3-8B has no config.json" in message
    assert "safety suite salad_base (safety.data_dir): data/safety/salad_base does not exist" in message
    assert "science judge model (rl.rewards.science_judge_model): checkpoints/science-judge" in message
    ckpt.mkdir()  # a directory without weights or tokenizer is not a checkpoint
    with pytest.raises(LocalFilesMissing) as info:
        run_mode(cfg)
    assert f"{ckpt / 'config.json'} does not exist" in str(info.value)
    assert f"{ckpt / '*.safetensors'} matches no file" in str(info.value)
    assert f"tokenizer (model.checkpoint): {ckpt / 'tokenizer.json'} does not exist" in str(info.value)
    require_local_files(load_preset("tiny"), ["06_safety"])  # presets that train their own model need no files
    assert main(["reproduce", "--preset", "paper", "--sections", "06", "--override", f"model.checkpoint={ckpt}",
                 "--override", f"eval.benchmark_dir={bench}"]) == 2
    err = capsys.readouterr().err
    assert "needs local files that are not there" in err and "Llama Guard checkpoint" in err


# ============================================================================== the paper's protocol and grading
def test_each_benchmark_runs_with_the_papers_protocol():
    base = GenerationConfig(temperature=0.0, top_p=1.0, max_new_tokens=7)
    got = {name: benchmark_generation(name, base)[:2] for name in ("aime24", "hmmt25", "gpqa_diamond",
                                                                   "livecodebench_v6", "math500", "mmlu_pro")}
    assert {k: (n, g.max_new_tokens, g.temperature, g.top_p) for k, (g, n) in got.items()} == {
        "aime24": (16, 65536, 0.6, 0.95), "hmmt25": (16, 65536, 0.6, 0.95), "gpqa_diamond": (5, 32768, 0.6, 0.95),
        "livecodebench_v6": (3, 65536, 0.6, 0.95), "math500": (1, 32768, 0.6, 0.95),
        "mmlu_pro": (3, 32768, 0.6, 0.95)}  # papers/eval_protocol.csv (paper §4.1)
    gen, n, proto = benchmark_generation("aime25", base, max_samples=2, max_new_tokens=64)
    assert (n, gen.max_new_tokens, proto.n_samples, proto.max_response_len) == (2, 64, 16, 65536)
    assert benchmark_generation("math500", base, max_samples=4)[1] == 1  # a cap never raises the protocol


def _completion(text: str) -> Completion:
    empty = np.zeros((3, 1), dtype=np.float32)
    return Completion(0, text, [1, 2, 3], empty[:, 0], empty, empty.astype(np.int32), "eos")


RIGHT_WRONG = {  # one right and one wrong response (the text after the prompt, which opened <think>)
    "aime24": ("So 33.</think>\nThe answer is $\\boxed{33}$.", "</think>\\boxed{34}"),
    "aime25": ("</think>\\boxed{049}", "</think>\\boxed{48}"),
    "hmmt25": ("</think>\\boxed{\\dfrac{9\\sqrt3}{4}}", "</think>\\boxed{\\frac{9}{4}}"),
    "amo_bench": ("</think>\\boxed{101}", "I think \\boxed{101} but I am not done"),  # unclosed: no answer
    "math500": ("</think>\\boxed{\\text{(B)}}", "</think>\\boxed{\\text{(E)}}"),
    "gpqa_diamond": ("Pa is N/m^2.</think>\nAnswer: B", "</think>\nAnswer: C"),
    "livecodebench_v6": ("</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                         "</think>\n```python\na, b = map(int, input().split())\nprint(a - b)\n```"),
}


def test_answers_are_graded_on_the_builders_answer_split(smoke_files):
    builder = load_prompt_builder(smoke_files["checkpoint"])
    for name, (right, wrong) in RIGHT_WRONG.items():
        problem = load_benchmark(name, smoke_files["benchmarks"], limit=1, allow_pickle=True)
        report = score_completions(problem, [_completion(right), _completion(wrong)], 2, builder=builder)
        row = report.per_problem[0]
        assert row["correct"] == 1, (name, row)
    amo = load_benchmark("amo_bench", smoke_files["benchmarks"], limit=1)
    report = score_completions(amo, [_completion(RIGHT_WRONG["amo_bench"][1])], 1, builder=builder)
    assert report.per_problem[0]["reasons"] == {"no_answer": 1}  # a box inside unclosed thinking does not count
    functional = [p for p in load_benchmark("livecodebench_v6", smoke_files["benchmarks"], allow_pickle=True)
                  if p["test_type"] == "functional"]
    code = ("</think>\n```python\nclass Solution:\n    def arraySum(self, nums: List[int]) -> int:\n"
            "        return float(sum(nums))\n```")  # 6.0 for an expected 6: LiveCodeBench's == accepts it
    assert score_completions(functional, [_completion(code)], 1, builder=builder).per_problem[0]["correct"] == 1


def test_benchmark_results_run_the_checkpoint_with_each_protocol(overrides, tmp_path):
    from falcon_h1r.sections.common import benchmark_results, get_base_model

    cfg = load_preset("paper", overrides)
    base = get_base_model(cfg, root=tmp_path, progress=False)
    records = benchmark_results(cfg, base, root=tmp_path, progress=False)
    assert set(records) == set(paper_smoke.BENCHMARKS)
    for name, r in records.items():
        proto_n = {"gpqa_diamond": 5, "livecodebench_v6": 3, "math500": 1}.get(name, 16)
        assert (r["protocol_n_samples"], r["n_samples"]) == (proto_n, min(proto_n, 2))
        assert r["max_new_tokens"] == 8 and r["capped"] and r["n_problems"] == 2 and 0 <= r["pass1"] <= 1
        assert sum(r["reasons"].values()) == r["n_problems"] * r["n_samples"]
    assert list(tmp_path.glob("paper/_cache/benchmarks-*.json"))  # cached: a second call reads it back
    assert benchmark_results(cfg, base, root=tmp_path, progress=False) == records


# ============================================================================== every notebook at --preset paper
SECTIONS = ["01_data_curation", "02_sft",
            "03_rl", "04_throughput", "05_deepconf", "06_safety"]


@pytest.mark.slow
@pytest.mark.parametrize("section", SECTIONS)
def test_every_notebook_runs_at_the_paper_preset(section, overrides, tmp_path):
    from falcon_h1r.cli import run_notebook
    from falcon_h1r.results import read_json

    results = tmp_path / "results"
    env = {"FALCON_H1R_RESULTS": str(results), "PYTHONPATH": os.pathsep.join([str(ROOT)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != "."])}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        run_notebook(section, "paper", parameters={"overrides": overrides}, root=results)
    finally:
        for k, v in before.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    written = results / "paper" / section
    assert (written / "provenance.json").exists()
    if section == "06_safety":
        summary = read_json(written / "summary.json")
        assert summary["safety_judge_is_llama_guard"] == 1 and summary["n_prompts_judged"] == 18
        assert read_json(written / "judge_stats.json")  # Llama Guard's calls, tokens and seconds
