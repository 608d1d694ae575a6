#!/usr/bin/env bash
# Fill a git-ignored folder (default .whl/) with the wheels the lent GPU image lacks for running the
# notebooks themselves there (papermill, an IPython kernel, datasets, math-verify), so that
# `falcon-h1r reproduce --preset small` runs on the GPU exactly as on a CPU. Packages the image already
# has (numpy, pandas, pyarrow, torch, ...) are left out. Run here, on a machine with PyPI access.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
grep -qxF "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
plat=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
tmp=$(mktemp -d)
# sed drops one harmless pip notice; with pipefail a failing download still stops the script
pip download -q "${plat[@]}" -d "$tmp" papermill==2.7.0 ipykernel==7.4.0 datasets==5.2.0 \
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 2>&1 | sed '/^WARNING: Location .* is ignored/d' >&2 \
  || { echo "gpu_notebook_wheels: pip download failed (see above)" >&2; exit 1; }
# already on the GPU image (KINDS.md's package list): do not carry
skip='^(numpy|pandas|pyarrow|torch|triton|pyyaml|PyYAML|tqdm|requests|urllib3|idna|certifi|charset_normalizer|filelock|fsspec|packaging|psutil|six|python_dateutil|tzdata|jinja2|MarkupSafe|markupsafe|typing_extensions|attrs|anyio|click|pygments|huggingface_hub|hf_xet|aiohttp|aiosignal|aiohappyeyeballs|frozenlist|multidict|yarl|propcache|xxhash|sympy|mpmath|httpx|httpcore|h11|sniffio|typer|shellingham|rich|markdown_it_py|mdurl|annotated_doc|typing_inspection|pydantic|pydantic_core|annotated_types)-'
for f in "$tmp"/*.whl; do
  name=$(basename "$f")
  if ! [[ "$name" =~ $skip ]]; then cp "$f" "$dest/"; fi
done
rm -rf "$tmp"
ls "$dest" | wc -l; du -sh "$dest"
