"""The one prompt builder: the package's tokenizer unchanged, real checkpoints through their chat template.

The checkpoint tokenizers here are tiny ones the tests save themselves in the Hugging Face format, with
a chat template of the ``<|im_start|>`` kind that the Falcon-H1 family uses (written by us; the
released Falcon-H1R-7B template itself is not reproduced).
"""

import pytest

from falcon_h1r import prompts as P
from falcon_h1r.random_checkpoints import FALCON_STYLE_TEMPLATE  # <|im_start|> turns, BOS first, <think> opened
from falcon_h1r.tokenizer import train_tokenizer
from falcon_h1r.verify import check

NO_THINK_IN_PROMPT = FALCON_STYLE_TEMPLATE.replace("<|im_start|>assistant\\n<think>\\n", "<|im_start|>assistant\\n")
NO_MARKERS = (
    "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<pad>"]


def save_checkpoint_tokenizer(path, template, specials=SPECIALS):
    """A tiny byte-level BPE saved in the Hugging Face format with ``template`` as its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["What is 2+2? The answer is \\boxed{4}.", "You are Falcon, think first."], trainer)
    extra = [s for s in specials if s not in ("<|begin_of_text|>", "<|end_of_text|>", "<pad>")]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                 pad_token="<pad>", additional_special_tokens=extra)
    hf.chat_template = template
    hf.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def falcon_dir(tmp_path_factory):
    return save_checkpoint_tokenizer(tmp_path_factory.mktemp("falcon_h1r_tok"), FALCON_STYLE_TEMPLATE)


def test_package_tokenizer_prompt_is_unchanged():
    tok = train_tokenizer(["Compute 2 + 3.", "The answer is \\boxed{5}."], 300)
    builder = P.load_prompt_builder(tok)
    for stage in P.STAGES:
        assert builder.prompt("Compute 2 + 3.", stage=stage) == tok.prompt("Compute 2 + 3.")
    assert builder.prompt({"question": "Compute 2 + 3.", "answer": "5"}) == tok.prompt("Compute 2 + 3.")
    assert builder.prompts(["a", "b"], n=2) == [tok.prompt("a")] * 2 + [tok.prompt("b")] * 2
    assert builder.markers == P.ThinkingMarkers("<think>", "</think>") and builder.opens_thinking
    assert builder.eos_id == tok.eos_id and builder.pad_id == tok.pad_id
    tok_sys = train_tokenizer(["x"], 300, system_prompt="Be brief.")
    assert P.load_prompt_builder(tok_sys).prompt("q") == tok_sys.prompt("q")  # its own system prompt, as today
    parts = builder.split("reasoning here\n</think>\nso \\boxed{5}")
    assert parts == P.ResponseParts("reasoning here", "so \\boxed{5}", True, builder.markers)


def test_checkpoint_prompt_uses_its_chat_template_and_the_paper_system_prompt(falcon_dir):
    builder = P.load_prompt_builder(falcon_dir)
    assert builder.prompt("What is 2+2?") == (
        "<|begin_of_text|><|im_start|>system\n" + P.PAPER_SYSTEM_PROMPT + "<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert builder.opens_thinking and builder.markers.close == "</think>"
    im_end = builder.hf.convert_tokens_to_ids("<|im_end|>")
    assert builder.stop_token_ids == [im_end, builder.hf.eos_token_id] and builder.eos_id == im_end
    ids = builder.encode(builder.prompt("What is 2+2?"))
    assert ids[0] == builder.hf.bos_token_id and builder.decode(ids) == builder.prompt("What is 2+2?")


def test_stage_system_prompts_and_no_system_prompt(falcon_dir):
    builder = P.load_prompt_builder(falcon_dir, stage_system_prompts={"safety": None})
    assert P.PAPER_SYSTEM_PROMPT in builder.prompt("q", stage="rl")
    assert P.PAPER_SYSTEM_PROMPT in builder.prompt("q", stage="curation")
    assert "system" not in builder.prompt("q", stage="safety")
    bare = P.load_prompt_builder(falcon_dir, system_prompt=None)
    assert bare.prompt("q") == "<|begin_of_text|><|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n"
    with pytest.raises(ValueError, match="accepted: evaluation"):
        builder.prompt("q", stage="sft")
    with pytest.raises(ValueError, match="accepted: evaluation"):
        P.load_prompt_builder(falcon_dir, stage_system_prompts={"judge": None})


def test_split_when_the_prompt_opens_thinking(falcon_dir):
    builder = P.load_prompt_builder(falcon_dir)
    parts = builder.split("Let me add. \\boxed{5}? no.\n</think>\nThe answer is \\boxed{4}.")
    assert parts.thinking == "Let me add. \\boxed{5}? no." and parts.answer == "The answer is \\boxed{4}."
    assert check({"domain": "math", "answer": "4"}, builder.answer_part(
        "Let me add. \\boxed{5}? no.\n</think>\nThe answer is \\boxed{4}.")).correct
    truncated = builder.split("still thinking \\boxed{4}")
    assert truncated == P.ResponseParts("still thinking \\boxed{4}", "", False, builder.markers)
    assert check({"domain": "math", "answer": "4"}, truncated.answer).reason == "no_answer"


def test_split_when_the_model_opens_thinking_itself(tmp_path):
    builder = P.load_prompt_builder(save_checkpoint_tokenizer(tmp_path, NO_THINK_IN_PROMPT))
    assert not builder.opens_thinking and builder.prompt("q").endswith("<|im_start|>assistant\n")
    assert builder.split("<think>\nhmm\n</think>\n\\boxed{1}") == P.ResponseParts("hmm", "\\boxed{1}", True,
                                                                                  builder.markers)
    assert builder.split("\\boxed{1}") == P.ResponseParts("", "\\boxed{1}", True, builder.markers)
    assert builder.split("<think>\nhmm") == P.ResponseParts("hmm", "", False, builder.markers)


def test_template_without_thinking_markers_falls_back_clearly(tmp_path):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    path = save_checkpoint_tokenizer(tmp_path, NO_MARKERS, specials)
    with pytest.warns(UserWarning, match="marks no thinking"):
        builder = P.load_prompt_builder(path)
    assert builder.markers is None and not builder.opens_thinking
    parts = builder.split("  The answer is \\boxed{4}.\n")
    assert parts == P.ResponseParts(None, "The answer is \\boxed{4}.", True, None)


def test_clear_errors_for_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        P.load_prompt_builder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        P.load_prompt_builder(tmp_path)
    with pytest.raises(TypeError, match="accepted: ChatTokenizer"):
        P.load_prompt_builder(42)
    path = save_checkpoint_tokenizer(tmp_path / "tpl", FALCON_STYLE_TEMPLATE)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(path))
    hf.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        P.load_prompt_builder(hf)
    with pytest.raises(TypeError, match="question"):
        P.load_prompt_builder(path).prompt({"problem": "no question field"})


def test_full_response_and_the_package_default_split(falcon_dir, tmp_path):
    """Rewards read whole assistant turns: the thinking opener the prompt wrote is put back; a builder whose
    model opens thinking itself, or marks none, returns the text as it is. The module-level split is the
    package's format (the response starts inside <think>)."""
    builder = P.load_prompt_builder(falcon_dir)
    assert builder.full_response("r\n</think>\nA") == "<think>\nr\n</think>\nA"
    own = P.load_prompt_builder(save_checkpoint_tokenizer(tmp_path, NO_THINK_IN_PROMPT))
    assert own.full_response("<think>r</think>A") == "<think>r</think>A"
    assert P.split_response("r\n</think>\nA") == P.ResponseParts("r", "A", True, P.PACKAGE_MARKERS)
    assert P.split_response("r only") == P.ResponseParts("r only", "", False, P.PACKAGE_MARKERS)
    assert P.split_response("A", None) == P.ResponseParts(None, "A", True, None)
    assert P.as_prompt_builder(falcon_dir).prompt("q") == builder.prompt("q")
    assert P.as_prompt_builder(object()) is None  # stand-ins are used as they are


def test_safety_splits_responses_at_the_templates_markers(falcon_dir, tmp_path):
    from falcon_h1r.safety import Split, split_with_builder

    opens = split_with_builder(P.load_prompt_builder(falcon_dir))
    assert opens("plan it\n</think>\nI refuse.") == Split("plan it", "I refuse.", "ok")
    assert opens("still planning") == Split("still planning", "", "unclosed")
    assert opens("a</think>b</think>c") == Split("ab", "c", "repeated")  # markers are not content
    assert opens("  ") == Split("", "", "empty")
    own = split_with_builder(P.load_prompt_builder(save_checkpoint_tokenizer(tmp_path, NO_THINK_IN_PROMPT)))
    assert own("Sure, here it is.") == Split("", "Sure, here it is.", "no_think")
    assert own("<think>hmm</think>No.") == Split("hmm", "No.", "ok")
