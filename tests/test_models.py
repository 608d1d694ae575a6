import pytest
import torch

from falcon_h1r.config import ModelConfig
from falcon_h1r.models import (build_model, count_params, falcon_h1r_7b_config, load_checkpoint, qwen3_8b_config,
                               save_model)


def test_baseline_is_parameter_matched_and_attention_only():
    m = ModelConfig()
    hybrid, base = build_model(m, 300), build_model(m, 300, family="qwen3")
    assert type(hybrid).__name__ == "FalconH1ForCausalLM" and type(base).__name__ == "Qwen3ForCausalLM"
    assert abs(count_params(base) - count_params(hybrid)) / count_params(hybrid) < 0.01


def test_paper_architectures_have_the_paper_shapes():
    c = falcon_h1r_7b_config()
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (44, 3072, 12, 2)
    assert (c.mamba_n_heads, c.mamba_d_head, c.mamba_d_state, c.vocab_size) == (24, 128, 256, 130048)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        n = count_params(AutoModelForCausalLM.from_config(c))
    assert abs(n / 1e9 - 7.59) < 0.01  # paper Table 8: 7.59 B
    q = qwen3_8b_config()
    assert (q.num_hidden_layers, q.hidden_size, q.vocab_size) == (36, 4096, 151936)


def test_save_and_load_round_trip(tmp_path, tiny_preset):
    from falcon_h1r.sections.common import get_tokenizer

    tok = get_tokenizer(tiny_preset, root=tmp_path)
    model = build_model(tiny_preset.model, tok.vocab_size, pad_id=tok.pad_id, eos_id=tok.eos_id).eval()
    save_model(model, tok, tmp_path / "ckpt", extra={"note": "test"})
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    ids = torch.tensor([tok.encode(tok.prompt("Compute 2 + 3."))])
    torch.testing.assert_close(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    from falcon_h1r.tokenizer import ChatTokenizer

    assert ChatTokenizer.load(tmp_path / "ckpt").encode("Compute 2 + 3.") == tok.encode("Compute 2 + 3.")


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*never downloads"):
        load_checkpoint(tmp_path / "Falcon-H1R-7B")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"incomplete: missing \['config.json', '\*.safetensors'\]"):
        load_checkpoint(tmp_path / "empty")


def test_paper_preset_without_weights_fails_clearly(tmp_path):
    from falcon_h1r.config import load_preset
    from falcon_h1r.sections.common import get_base_model

    p = load_preset("paper", {"device": "cpu", "model.checkpoint": str(tmp_path / "nope")})
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        get_base_model(p, root=tmp_path)
