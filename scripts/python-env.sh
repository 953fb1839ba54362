# Sourced by bin/onwatch and scripts/test: find a Python 3.12+ and uv, and say so plainly.
# uv is told which interpreter to use because pyenv's shims confuse its discovery.
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
  return 1
}

ONWATCH_PY="$(onwatch_python || true)"
# A pyenv shim named uv may exist and still fail, so ask it for its version.
if uv --version >/dev/null 2>&1; then
  UV=(uv)
elif [ -n "$ONWATCH_PY" ] && "$ONWATCH_PY" -m uv --version >/dev/null 2>&1; then
  UV=("$ONWATCH_PY" -m uv)
else
  echo "onwatch: installing uv (the Python package manager onwatch uses)" >&2
  py="${ONWATCH_PY:-$(command -v python3)}"
  "$py" -m pip install --quiet --user uv 2>/dev/null || "$py" -m pip install --quiet uv \
    || "$py" -m pip install --quiet --break-system-packages uv
  UV=("$py" -m uv)
fi
# With no 3.12+ here, uv fetches one where the network allows it.
UV_PYTHON_ARGS=()
[ -n "$ONWATCH_PY" ] && UV_PYTHON_ARGS=(--python "$ONWATCH_PY")
export UV_PROJECT_ENVIRONMENT="${UV_PROJECT_ENVIRONMENT:-$ONWATCH_ROOT/.venv}"
