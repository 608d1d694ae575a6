import pytest

from falcon_h1r.config import PRESETS, RecipeError, load_preset, parse


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name):
    p = load_preset(name)
    assert p.name == name
    assert p.model.num_attention_heads % p.model.num_key_value_heads == 0


def test_unknown_key_is_named():
    with pytest.raises(RecipeError, match=r"unknown key model\.hiden_size.*accepts:.*hidden_size"):
        load_preset("tiny", {"model.hiden_size": 3})


def test_bad_value_is_named():
    with pytest.raises(RecipeError, match=r"train\.steps: expected an integer"):
        load_preset("tiny", {"train.steps": "many"})
    with pytest.raises(RecipeError, match=r"generation\.top_p: must be in \(0, 1\]"):
        load_preset("tiny", {"generation.top_p": 1.5})
    with pytest.raises(RecipeError, match=r"tasks\.domains"):
        load_preset("tiny", {"tasks.domains": ["poetry"]})
    with pytest.raises(RecipeError, match="dtype"):
        load_preset("tiny", {"dtype": "float8"})


def test_unknown_preset_lists_valid():
    with pytest.raises(RecipeError, match="presets are tiny, small, paper"):
        load_preset("huge")


def test_overrides_apply_and_sections_are_parsed_by_modules():
    from falcon_h1r.deepconf import DeepConfRecipe

    p = load_preset("tiny", {"train.steps": 7, "deepconf.window": 16})
    assert p.train.steps == 7
    assert p.section("deepconf", DeepConfRecipe).window == 16
    with pytest.raises(RecipeError, match="unknown key deepconf.windw"):
        load_preset("tiny", {"deepconf.windw": 16}).section("deepconf", DeepConfRecipe)
    with pytest.raises(RecipeError, match="unknown section 'poetry'"):
        p.section("poetry", DeepConfRecipe)


def test_numeric_strings_from_yaml_are_numbers():
    from falcon_h1r.config import TrainConfig

    assert parse(TrainConfig, {"lr": "3e-4"}).lr == pytest.approx(3e-4)


@pytest.mark.parametrize("key, value", [("train.steps", 0), ("train.batch_size", 0), ("train.lr", 0),
                                        ("train.warmup_frac", 1.0), ("train.max_seq_len", 0),
                                        ("train.cpu_threads", 0), ("train.cpu_ranks", 0)])
def test_every_train_field_is_checked(key, value):
    with pytest.raises(RecipeError, match=key):
        load_preset("tiny", {key: value})


def test_train_key_leaves_out_one_cpu_rank_only():
    """cpu_ranks 1 (every preset before the field existed) keeps the old cache keys; 2 changes them."""
    from falcon_h1r.config import to_dict

    one, two = load_preset("tiny", {"train.cpu_ranks": 1}).train, load_preset("tiny", {"train.cpu_ranks": 2}).train
    assert "cpu_ranks" not in one.key() and {**one.key(), "cpu_ranks": 1} == to_dict(one)
    assert two.key() == to_dict(two)
