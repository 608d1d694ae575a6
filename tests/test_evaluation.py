"""The one held-out evaluation: grading by a batch grader equals grading one by one, and the per-problem
outcomes and output entropy the SFT ablations pair on."""

import math
import random

import numpy as np
import pytest
import torch

from falcon_h1r.evaluation import evaluate, evaluate_outcomes, output_entropy, score_completions
from falcon_h1r.inference import Completion
from falcon_h1r.tasks import make_problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _completion(text: str, tokens: int = 3) -> Completion:
    empty = np.zeros((tokens, 1), dtype=np.float32)
    return Completion(0, text, list(range(tokens)), empty[:, 0], empty, empty.astype(np.int32), "eos")


def test_a_batch_grader_scores_like_verify_check_one_by_one():
    from falcon_h1r.curation import grade

    problems = [{"id": "m", "domain": "math", "difficulty": 1, "answer": "8"},
                {"id": "s", "domain": "science", "difficulty": 2, "answer": "2.5", "tolerance": 0.01},
                {"id": "c", "domain": "code", "difficulty": 3, "tests": ["assert solve(1) == 2"], "language": "python"}]
    texts = ["r</think>\\boxed{8}", "r</think>\\boxed{2^{3}}", "r</think>\\boxed{2.5}", "r</think>none",
             "r</think>```python\ndef solve(x):\n    return x + 1\n```", "r</think>```python\ndef solve(x):\n    return x\n```"]
    comps = [_completion(t, tokens=i + 1) for i, t in enumerate(texts)]
    plain = score_completions(problems, comps, 2)
    batched = score_completions(problems, comps, 2, grader=grade)
    assert [r["correct"] for r in plain.per_problem] == [r["correct"] for r in batched.per_problem] == [2, 1, 1]
    assert [r["answers"] for r in plain.per_problem] == [r["answers"] for r in batched.per_problem]
    assert plain.pass1 == batched.pass1 == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert plain.mean_response_tokens == pytest.approx(3.5)
    with pytest.raises(ValueError, match="expected 6 completions"):
        score_completions(problems, comps[:5], 2)


@pytest.fixture(scope="module")
def tiny_model_and_tokenizer():
    from falcon_h1r.config import ModelConfig
    from falcon_h1r.models import build_model
    from falcon_h1r.tokenizer import train_tokenizer

    corpus = [make_problem(d, 1, random.Random(i))["question"] for i in range(40) for d in ("math", "science")]
    tok = train_tokenizer(corpus + ["The answer is \\boxed{7}."], 300)
    m = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    intermediate_size=64, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_state=8, mamba_chunk_size=8)
    return build_model(m, tok.vocab_size, seed=0, pad_id=tok.pad_id, eos_id=tok.eos_id).eval(), tok


def test_outcomes_are_per_problem_and_the_entropy_is_the_models_own(tiny_model_and_tokenizer):
    from falcon_h1r.config import GenerationConfig
    from falcon_h1r.inference import generate, greedy

    model, tok = tiny_model_and_tokenizer
    problems = [{**make_problem(d, lvl, random.Random(i)), "id": f"{d}{i}"}
                for i, (d, lvl) in enumerate([("math", 1), ("science", 2), ("math", 3)])]
    gen = greedy(GenerationConfig(max_new_tokens=5, batch_size=8))
    out = evaluate_outcomes(model, tok, problems, gen, seed=0)
    assert out["outcome_levels"] == [1, 2, 3] and out["outcome_domains"] == ["math", "science", "math"]
    assert out["acc"] == pytest.approx(sum(out["outcomes"]) / 3)
    assert out["acc"] == evaluate(model, tok, problems, gen, n_samples=1, progress=False).pass1
    assert 0 < out["entropy"] <= math.log(tok.vocab_size) + 1e-6
    # the batched entropy against one row computed by hand
    prompt = tok.prompt(problems[0]["question"])
    comp = generate(model, tok, [prompt], gen, progress=False)[0]
    ids = tok.encode(prompt) + list(comp.token_ids)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float(), -1)
    p0 = len(tok.encode(prompt))
    by_hand = float(-(logp.exp() * logp).sum(-1)[p0 - 1:p0 - 1 + comp.num_tokens].mean())
    assert output_entropy(model, tok, [prompt], [comp]) == pytest.approx(by_hand, abs=1e-5)
