# Sourced by bin/onwatch and scripts/test: find a Python 3.12+ and uv, and say so plainly.
# uv is told which interpreter to use because pyenv's shims confuse its discovery.
# What cannot be found ends in one line and status 2; nothing is installed into the
# system's Python (Debian's and Ubuntu's refuse it, rightly), and no Python is downloaded.
ONWATCH_ROOT="${ONWATCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

onwatch_python() {
  local candidates=()
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    for v in "$root"/versions/3.1[2-9]*; do candidates+=("$v/bin/python3"); done
  fi
  for name in python3.14 python3.13 python3.12 python3; do
    local p; p="$(command -v "$name" 2>/dev/null)" || continue
    candidates+=("$p")
  done
  for p in "${candidates[@]}"; do
    [ -x "$p" ] || continue
    if "$p" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  # Else one that uv installed earlier (`uv python install 3.12`); finding it downloads
  # nothing.
  uv python find --managed-python --no-python-downloads '>=3.12' 2>/dev/null
}

# "Python 3.11.2", or a plain "no Python 3" for the message below.
onwatch_python_found() {
  local v
  v="$(python3 --version 2>/dev/null)" && { echo "only $v"; return; }
  echo "no Python 3"
}

onwatch_no_python() {
  echo "onwatch: onwatch needs Python 3.12 or newer and this machine has $(onwatch_python_found);" \
    "install one (your system's python3.12 package, or \`uv python install 3.12\` with uv" \
    "from https://docs.astral.sh/uv/) and run this again" >&2
}

# uv in a virtual environment of onwatch's own, made with the Python found above: pip
# --user is refused on Debian 12 and Ubuntu 23.04+ ("externally-managed-environment").
onwatch_install_uv() {
  local dir="$ONWATCH_ROOT/.uv" out
  echo "onwatch: installing uv (the Python package manager onwatch uses) into $dir" >&2
  if ! out="$("$ONWATCH_PY" -m venv "$dir" 2>&1 && "$dir/bin/python" -m pip install \
    --quiet --disable-pip-version-check uv 2>&1)"; then
    rm -rf "$dir"
    echo "onwatch: could not install uv (${out##*$'\n'}); install it from" \
      "https://docs.astral.sh/uv/ and run this again" >&2
    return 2
  fi
}

ONWATCH_PY="$(onwatch_python)" || { onwatch_no_python; return 2; }
# A pyenv shim named uv may exist and still fail, so ask it for its version.
if uv --version >/dev/null 2>&1; then
  UV=(uv)
elif "$ONWATCH_PY" -m uv --version >/dev/null 2>&1; then
  UV=("$ONWATCH_PY" -m uv)
elif "$ONWATCH_ROOT/.uv/bin/uv" --version >/dev/null 2>&1; then
  UV=("$ONWATCH_ROOT/.uv/bin/uv")
else
  onwatch_install_uv || return 2
  UV=("$ONWATCH_ROOT/.uv/bin/uv")
fi
UV_PYTHON_ARGS=(--python "$ONWATCH_PY")
export UV_PROJECT_ENVIRONMENT="${UV_PROJECT_ENVIRONMENT:-$ONWATCH_ROOT/.venv}"
