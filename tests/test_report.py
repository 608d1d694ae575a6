import json

import pytest

from falcon_h1r.env import REPO_ROOT
from falcon_h1r.sections.report import headline_markdown, update_readme


def test_headlines_come_from_summary_json(tmp_path):
    d = tmp_path / "small" / "05_deepconf"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"deepconf_low_acc": 0.4, "majority_acc_k32": 0.1,
                                                "majority_acc_k128": 0.35}))
    md = headline_markdown("small", tmp_path)
    assert "| DeepConf-low accuracy | 0.400 |" in md
    assert "| majority@K accuracy (largest K) | 0.350 |" in md  # the largest K, not the first
    assert "| DeepConf-high accuracy | not run |" in md


def test_an_estimate_shows_its_interval_and_a_not_informative_one_says_so(tmp_path):
    d = tmp_path / "tiny" / "03_rl"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "math_only_minus_sft_math": 0.05, "math_only_minus_sft_math_ci95": 0.02, "math_only_minus_sft_math_informative": True,
        "backfill_gen_call_saving_vs_nocache": 0.3, "backfill_gen_call_saving_vs_nocache_ci95": 0.0,
        "backfill_gen_call_saving_vs_nocache_informative": False}))
    md = headline_markdown("tiny", tmp_path)
    assert "| RL: math-only minus SFT, held-out math (paired) | +0.050 ± 0.020 |" in md
    assert "| RL: backfill's generation-call saving, cache vs no cache | +0.300 ± 0.000 (not informative) |" in md


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:tiny:begin -->\nold\n<!-- results:tiny:end -->\nrest\n")
    assert update_readme("tiny", readme, tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    with pytest.raises(ValueError, match="no <!-- results:small:begin -->"):
        update_readme("small", readme, tmp_path)


def test_committed_readme_small_table_matches_committed_results():
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- results:small:begin -->\n", 1)[1].split("\n<!-- results:small:end -->", 1)[0]
    assert block == headline_markdown("small", REPO_ROOT / "results"), \
        "README's small-preset table is stale: run `falcon-h1r summary --preset small --write-readme`"
