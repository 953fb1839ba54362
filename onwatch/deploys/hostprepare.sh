# Run by onwatch on a host, as the deploy user (`sh -s -- PYTHON PACKAGE…`): makes the
# virtual environment onwatch keeps its tools in and installs the packages into it from
# the host's own package index. One "name ok|failed why" line per package.
dir="${ONWATCH_HOST_DIR:-$HOME/.onwatch}"
venv="$dir/venv"
py=$1
shift
if [ $# -gt 0 ] && [ ! -x "$venv/bin/pip" ]; then
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
# After a reboot nothing of onwatch's runs until something starts the host's supervisord:
# cron does, at boot (no root needed), and supervisord starts Caddy and the live releases
# (its programs do not start by themselves: onwatch starts each when it switches).
sup="$dir/machine/supervisor"
mkdir -p "$dir" && cat > "$dir/boot.sh" <<BOOT || { echo "boot failed could not write $dir/boot.sh"; exit 0; }
# Written by onwatch (hostprepare.sh): started by cron at boot.
[ -f "$sup/supervisord.conf" ] || exit 0
"$venv/bin/supervisord" -c "$sup/supervisord.conf" || exit 1
for i in 1 2 3 4 5 6 7 8 9 10; do
  sleep 1
  "$venv/bin/supervisorctl" -s "unix://$sup/supervisor.sock" start all && exit 0
done
exit 1
BOOT
line="@reboot /bin/sh \"$dir/boot.sh\" >/dev/null 2>&1"
if ! command -v crontab >/dev/null 2>&1; then echo "boot failed crontab is missing"
elif crontab -l 2>/dev/null | grep -qxF "$line"; then echo "boot ok"
elif out=$( { crontab -l 2>/dev/null; echo "$line"; } | crontab - 2>&1); then echo "boot ok"
else echo "boot failed $(printf '%s' "$out" | tail -n 1)"; fi
# Where systemd runs, linger starts the deploy user's own manager at boot and keeps it
# after logout: the units onwatch gives it (systemd.py) then run without a login. logind
# lets a user turn it on for itself unless the host's polkit says otherwise.
if [ -d /run/systemd/system ] && command -v loginctl >/dev/null 2>&1; then
  if out=$(loginctl enable-linger "$(id -un)" 2>&1); then echo "linger ok"
  else echo "linger failed $(printf '%s' "$out" | tail -n 1)"; fi
fi
