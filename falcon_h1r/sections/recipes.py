"""Which dataclass reads each block of a preset, and the whole-preset check run before any notebook starts.

Every section module parses its own block (``cfg.section(name, cls)``); this map lets the CLI (and a notebook's
first cell) parse all of them up front, so a typo in a preset file or an override fails at once with one line
naming the key and what is accepted, instead of halfway through a notebook.
"""

from __future__ import annotations

import importlib
from typing import Any

from falcon_h1r.config import SECTION_BLOCKS, Preset, RecipeError, load_preset

# block -> "module:Class" (imported only when checked)
BLOCK_RECIPES: dict[str, str] = {
    "curation": "falcon_h1r.curation:CurationRecipe",
    "sft": "falcon_h1r.sft:SFTRecipe",
    "sft_ablations": "falcon_h1r.sections.sft_ablations:SFTAblations",
    "rl": "falcon_h1r.grpo:RLRecipe",
    "rl_experiments": "falcon_h1r.sections.rl:RLExperimentRecipe",
    "throughput": "falcon_h1r.sections.throughput:ThroughputRecipe",
    "deepconf": "falcon_h1r.deepconf:DeepConfRecipe",
    "deepconf_experiments": "falcon_h1r.sections.deepconf:DeepConfExperiment",
    "safety": "falcon_h1r.sections.safety:SafetyRecipe",
}


def recipe_class(block: str) -> type:
    if block not in BLOCK_RECIPES:
        raise RecipeError(f"unknown section block {block!r}; blocks are {', '.join(BLOCK_RECIPES)}")
    module, _, cls = BLOCK_RECIPES[block].partition(":")
    return getattr(importlib.import_module(module), cls)


def validate_preset(preset: str, overrides: dict[str, Any] | None = None) -> Preset:
    """Load ``preset`` with ``overrides`` and parse every section block; :class:`RecipeError` names the first
    bad key or value and what is accepted."""
    cfg = load_preset(preset, overrides)
    for block in BLOCK_RECIPES:
        cfg.section(block, recipe_class(block))
    return cfg


assert set(BLOCK_RECIPES) == set(SECTION_BLOCKS), "every preset block needs its recipe class here"
