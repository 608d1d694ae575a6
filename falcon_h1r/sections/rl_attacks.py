"""Notebook 03's security check: the sandbox's adversarial suite run THROUGH the code reward inside one
GRPO training step (the RL half of paper §3's sandboxed code reward).

Why a section module: this is an experiment built from library parts (the attacks and the host probes of
:mod:`falcon_h1r.sandbox`, the reward pool of :mod:`falcon_h1r.rewards`, one :func:`falcon_h1r.grpo.grpo_update`
on injected rollouts), with canary files, a loopback listener and a planted secret around it; the trainer
itself knows nothing of attacks.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from falcon_h1r import sandbox
from falcon_h1r.grpo import RLRecipe, completion_from_text, fill_sampler_logprobs, grpo_update, make_optimizer
from falcon_h1r.rewards import RewardPool
from falcon_h1r.rollout_buffer import Group, group_advantages


def attack_training_step(model: torch.nn.Module, tok: Any, recipe: RLRecipe, *, device: Any = "cpu",
                         names: Sequence[str] | None = None, grace_s: float = 1.0) -> dict[str, Any]:
    """Run the sandbox's adversarial suite THROUGH the code reward inside one GRPO training step.

    Each attack (``falcon_h1r.sandbox.ATTACKS``) becomes the code answer of one rollout of a group whose
    other rollouts are a benign correct answer and a benign wrong one, so the group is informative and the
    step really updates the model on the attack rollouts. Afterwards every attack must have reward 0 with a
    reason of its expected class, and the host must be unaffected: canary files intact, nothing written
    outside, the loopback listener never contacted, the secret never echoed, no new process of the
    sandbox user left, the parent's open files unchanged, and the training step finite.
    Returns ``{"rows": [...], "attacks_tried", "escapes", "unexpected_reasons", "step": {...}}``.
    """
    chosen = list(sandbox.ATTACKS) if names is None else list(names)
    unknown = [n for n in chosen if n not in sandbox.ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; accepted: {sorted(sandbox.ATTACKS)}")
    scratch = tempfile.mkdtemp(prefix="falcon_h1r_rl_attacks_")
    secret_name = "FALCON_H1R_RL_SECRET"
    os.environ[secret_name] = "s3cr3t-" + secrets.token_hex(8)
    secret = os.environ[secret_name]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sandboxed_before = sandbox.sandbox_processes()
    fds_before = sandbox.open_fd_count()  # the sandbox servers' own pipes left out
    token = secrets.token_hex(8)  # the expected answer: never placed in any attack's code
    params_before = [p.detach().clone() for p in model.parameters()]
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        canaries, outsides, problems, texts = {}, {}, [], []
        for name in chosen:
            canary = os.path.join(scratch, f"canary_{name}.txt")
            canaries[name] = (canary, f"canary {secrets.token_hex(8)}\n")
            Path(canary).write_text(canaries[name][1])
            outsides[name] = os.path.join(tempfile.gettempdir(), f"falcon_h1r_rl_escape_{secrets.token_hex(8)}")
            code = sandbox.fill_attack(name, CANARY=canary, OUTSIDE=outsides[name], PORT=port,
                                       SECRET_NAME=secret_name)
            prob = {"id": f"attack-{name}", "domain": "code", "difficulty": 0, "language": "python",
                    "question": "Write a Python function solve(x) that returns the secret token.", "answer": "",
                    "tests": sandbox.attack_tests(token)}
            problems.append(prob)
            texts.append(f"<think>\nI will write the function.\n</think>\n```python\n{code}```")
        benign_ok = f"<think>\nReturn the token.\n</think>\n```python\ndef solve(x):\n    return {token!r}\n```"
        benign_bad = "<think>\nReturn nothing useful.\n</think>\n```python\ndef solve(x):\n    return ''\n```"
        pool = RewardPool(recipe.rewards)
        t0 = time.time()
        attack_results = pool.score(problems, texts, memo=False)
        benign = pool.score([problems[0], problems[0]], [benign_ok, benign_bad], memo=False)
        grade_s = time.time() - t0
        # one training step on groups [attack, benign correct, benign wrong]
        groups = []
        for prob, text, res in zip(problems, texts, attack_results):
            members = [(text, res), (benign_ok, benign[0]), (benign_bad, benign[1])]
            comps = [completion_from_text(tok, t) for t, _ in members]
            rewards = [r.reward for _, r in members]
            groups.append(Group(problem=prob, rollouts=comps, rewards=rewards, correct=[r.correct for _, r in members],
                                advantages=group_advantages(rewards, recipe.advantage_eps, recipe.advantage_std),
                                born_step=0))
        fill_sampler_logprobs(model, tok, groups, recipe, device)
        opt, _ = make_optimizer(model, replace(recipe, warmup_steps=0))
        step_stats = grpo_update(model, opt, groups, replace(recipe, mini_batches=1), lambda p: tok.encode(tok.prompt(p["question"])),
                                 tok.pad_id, device)
        time.sleep(grace_s)
        listener_ok = not sandbox.listener_was_contacted(listener)
        left = sorted(set(sandbox.sandbox_processes()) - set(sandboxed_before))
        params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        changed = any(not torch.equal(a, b.detach()) for a, b in zip(params_before, model.parameters()))
        rows = []
        for name, res in zip(chosen, attack_results):
            reason = res.reason[len("tests_failed: "):] if res.reason.startswith("tests_failed: ") else res.reason
            expected = sandbox.ATTACK_EXPECTED[name]
            canary, text = canaries[name]
            canary_ok = Path(canary).exists() and Path(canary).read_text() == text
            outside_ok = not os.path.lexists(outsides[name])
            if not outside_ok:
                os.remove(outsides[name])
            host = {"reward_zero": res.reward <= 0 and not res.correct, "canary_intact": canary_ok,
                    "no_file_outside": outside_ok, "secret_not_echoed": secret not in res.reason}
            rows.append({"name": name, "reward": res.reward, "reason": reason, "expected": list(expected),
                         "expected_reason": any(r.startswith(e) for e in expected for r in (reason, res.reason)), **host,
                         "escaped": not all(host.values())})
        shared = {"loopback_untouched": listener_ok, "no_leftover_processes": not left,
                  "parent_fds_stable": sandbox.open_fd_count() == fds_before,
                  "training_step_finite": params_finite and math.isfinite(step_stats.get("pg_loss", 0.0)),
                  "model_updated": changed, "benign_correct_rewarded": benign[0].correct and not benign[1].correct}
        escapes = sum(r["escaped"] for r in rows) + sum(not v for k, v in shared.items()
                                                        if k in ("loopback_untouched", "no_leftover_processes"))
        return {"rows": rows, "attacks_tried": len(rows), "escapes": escapes,
                "unexpected_reasons": sum(not r["expected_reason"] for r in rows), "shared_checks": shared,
                "leftover_pids": left, "grade_wall_s": grade_s, "step": step_stats}
    finally:
        listener.close()
        os.environ.pop(secret_name, None)
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["attack_training_step"]
