#!/usr/bin/env bash
# Install verl's configuration code (no dependencies: no Ray, no vLLM, no tensordict) into a folder of the venv, so
# that tests/test_verl_export.py validates the exported GRPO configuration against verl's own config dataclasses
# and its generated ppo_trainer.yaml. verl 0.9.1 pins transformers<5.11, which the project's venv cannot take, so
# its code goes to a separate --target folder that only falcon_h1r.scaleout.verl_export.import_verl_config puts on
# sys.path. omegaconf 2.4.0 (needs only PyYAML) is what verl's config classes are built on.
#   bash scripts/verl_config_env.sh [VENV]     (default .venv; the folder is VENV/verl-config)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-${VENV:-.venv}}
dest="$venv/verl-config"
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "verl==0.9.1 omegaconf==2.4.0" ]; then exit 0; fi
rm -rf "$dest"
"$venv/bin/python" -m pip -q --disable-pip-version-check install --no-deps --target "$dest" \
  verl==0.9.1 omegaconf==2.4.0
mkdir -p "$dest"
echo "verl==0.9.1 omegaconf==2.4.0" > "$dest/.complete"
echo "[verl-config] verl 0.9.1's config code in $dest" >&2
