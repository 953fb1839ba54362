# Run by onwatch on a host, as the deploy user (`sh -s -- PYTHON PACKAGE…`): makes the
# virtual environment onwatch keeps its tools in and installs the packages into it from
# the host's own package index. One "name ok|failed why" line per package.
dir="${ONWATCH_HOST_DIR:-$HOME/.onwatch}"
venv="$dir/venv"
py=$1
shift
if [ ! -x "$venv/bin/pip" ]; then
  out=$(mkdir -p "$dir" 2>&1 && "$py" -m venv "$venv" 2>&1) || {
    echo "venv failed $(printf '%s' "$out" | tail -n 1)"
    exit 0
  }
fi
for package in "$@"; do
  out=$("$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade "$package" 2>&1)
  if [ $? -eq 0 ]; then echo "$package ok"
  else echo "$package failed $(printf '%s' "$out" | grep -v '^ *$' | tail -n 1)"; fi
done
