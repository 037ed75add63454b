#!/usr/bin/env bash
# Install oellm's worker (oellm + lm-eval + transformers + torch) into one Python environment.
#
# Shared by containers/*.def (%post) and tests/test_containers.py, so the image and the test
# install exactly the same way.
#
#   PYTHON=/opt/venv/bin/python containers/install.sh        (or: containers/install.sh /opt/venv/bin/python)
#
#   PYTHON           interpreter to install into, usually a venv's python (required)
#   OELLM_SRC        the oellm source tree (default: the folder above this script)
#   TORCH_SPEC       torch requirement (default: torch==2.13.0)
#   TORCH_INDEX_URL  wheel index for torch, e.g. https://download.pytorch.org/whl/cu126 (default: PyPI)
#   OELLM_EXTRAS     oellm's extras (default: worker; a lighteval image: worker,lighteval)
#
# Needs PyPI (and TORCH_INDEX_URL when set), nothing else.
set -euo pipefail

PYTHON=${1:-${PYTHON:-}}
OELLM_SRC=${OELLM_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
OELLM_EXTRAS=${OELLM_EXTRAS:-worker}

step="checking arguments"
trap 'echo "install.sh: FAILED while ${step} (exit $?)" >&2' ERR
die() { echo "install.sh: FAILED: $*" >&2; exit 1; }

[[ -n $PYTHON ]] || die "no interpreter given: set PYTHON=/path/to/venv/bin/python or pass it as the first argument"
if [[ $PYTHON != */* ]]; then PYTHON=$(command -v "$PYTHON") || die "interpreter not found: $PYTHON"; fi
[[ $PYTHON == /* ]] || PYTHON=$PWD/$PYTHON  # absolute, as the checks below run from /; no realpath: a venv's python is a symlink
[[ -x $PYTHON ]] || die "interpreter not found or not executable: $PYTHON"
[[ -f $OELLM_SRC/pyproject.toml ]] || die "no pyproject.toml in OELLM_SRC=$OELLM_SRC"
OELLM_SRC=$(cd "$OELLM_SRC" && pwd)
pip=("$PYTHON" -m pip install --no-input)

step="upgrading pip"
echo "== $step in $PYTHON"
"${pip[@]}" --upgrade pip

# torch first, from its own index: the worker extra only asks for some torch, and left to itself
# pip would take PyPI's default build, which need not match the site's GPUs (PyPI has no ROCm
# build at all).
step="installing $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
echo "== $step"
if [[ -n $TORCH_INDEX_URL ]]; then
  "${pip[@]}" --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
else
  "${pip[@]}" "$TORCH_SPEC"
fi
torch_version=$("$PYTHON" -I -c 'from importlib.metadata import version; print(version("torch"))')

# Then oellm with its worker extra, holding torch at the build just installed (a constraint, so a
# dependency that wants another torch fails here rather than silently swapping the GPU build).
# A real (not editable) install: the image must not depend on the source tree it was built from.
step="installing oellm[$OELLM_EXTRAS] from $OELLM_SRC (torch held at $torch_version)"
echo "== $step"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" >"$constraints"
"${pip[@]}" --constraint "$constraints" "${OELLM_SRC}[${OELLM_EXTRAS}]"

# Verify from outside the source tree (-I: no cwd, PYTHONPATH or user site on sys.path), so that
# what is checked is the installed copy.
step="verifying the install"
echo "== $step"
cd /
"$PYTHON" -I -m oellm --help >/dev/null || die "'$PYTHON -m oellm --help' failed"
"$PYTHON" -I - "$OELLM_SRC" "$torch_version" <<'EOF' || die "verification failed (see above)"
import re, sys
from importlib.metadata import version
from pathlib import Path

src, torch_wanted = Path(sys.argv[1]), sys.argv[2]
import datasets, lm_eval, oellm, torch, transformers  # each must import

want = re.search(r'^version\s*=\s*"([^"]+)"', (src / "pyproject.toml").read_text(), re.M).group(1)
errors = []
if oellm.__version__ != want:
    errors.append(f"oellm.__version__ is {oellm.__version__}, pyproject.toml says {want}")
if Path(oellm.__file__).resolve().is_relative_to(src):
    errors.append(f"oellm is imported from the source tree ({oellm.__file__}), not installed")
if version("torch") != torch_wanted:
    errors.append(f"torch changed from {torch_wanted} to {version('torch')} while installing oellm")
for dist in ("oellm", "lm_eval", "transformers", "datasets", "torch"):
    print(f"{dist:>12} {version(dist)}")
if errors:
    sys.exit("\n".join(errors))
EOF
echo "== oellm installed into $PYTHON"
