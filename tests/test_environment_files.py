"""environment.yml cannot be exercised here (no conda): keep its pins in step with pyproject.toml."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    """name -> (version specifier, environment marker) of every requirement line; `-e .` and the like skipped."""
    out = {}
    for line in lines:
        try:
            req = Requirement(line.strip())
        except InvalidRequirement:
            continue
        out[canonicalize_name(req.name)] = (str(req.specifier), str(req.marker or ""))
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py_pins = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = _pins(pip_block)
    assert env_pins == py_pins
    assert all(spec.startswith("==") for spec, _ in py_pins.values()), py_pins
    assert "-e ." in pip_block


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make reproduce" in readme
