# Run by onwatch on a host, as the deploy user (`sh -s`): one "name value…" line per thing
# a deploy needs. It changes nothing; onwatch decides what is enough (deploys/hosts.py).
dir="${ONWATCH_HOST_DIR:-$HOME/.onwatch}"
venv="$dir/venv"
echo "dir $dir"
py=""
for c in python3.14 python3.13 python3.12 python3.11 python3; do
  p=$(command -v "$c" 2>/dev/null) || continue
  v=$("$p" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue
  echo "python $v $p"
  py=$p
  break
done
if [ -n "$py" ] && "$py" -c 'import venv, ensurepip' 2>/dev/null; then echo "venv yes"; else echo "venv no"; fi
# systemd: "user" when this user's own manager answers (systemd.py runs the apps as its
# units), "running" when only the system's does (no linger), else "no".
state=$(XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}" \
  systemctl --user show --property=SystemState --value 2>/dev/null)
case "$state" in running|degraded) up=yes ;; *) up=no ;; esac
if [ "$up" = yes ]; then echo "systemd user $state"
elif [ -d /run/systemd/system ]; then echo "systemd running"
else echo "systemd no"; fi
# The process manager the agent uses, as systemd.manager chooses it: the one the apps were
# given to, else systemd's user manager when it answers and outlives the user's sessions
# (logind stops it at logout unless the user lingers), else supervisord.
m="$dir/machine"
if [ ! -d /run/systemd/system ] || [ -e "/var/lib/systemd/linger/$(id -un)" ]; then stays=yes
else stays=no; fi
if [ -f "$m/supervisor/supervisord.conf" ]; then echo "manager supervisord"
elif [ -d "$m/systemd" ] || { [ "$up" = yes ] && [ "$stays" = yes ]; }; then echo "manager systemd"
else echo "manager supervisord"; fi
if [ -x "$venv/bin/supervisord" ]; then
  echo "supervisord $("$venv/bin/supervisord" --version 2>/dev/null | head -n 1) $venv/bin/supervisord"
fi
for c in "$venv/bin/caddy" "$(command -v caddy 2>/dev/null)"; do
  [ -n "$c" ] && [ -x "$c" ] || continue
  echo "caddy $("$c" version 2>/dev/null | cut -d' ' -f1) $c"
  break
done
# bubblewrap, which builds run in there (agent.py); tried, as user namespaces may be off.
b=$(command -v bwrap 2>/dev/null)
if [ -z "$b" ]; then echo "bwrap none"
elif said=$("$b" --ro-bind / / --dev /dev --proc /proc --unshare-pid true 2>&1); then
  echo "bwrap yes $b"
else echo "bwrap broken $(printf '%s' "$said" | tail -n 1)"; fi
# Ports below this need a right (root, or the capability on Caddy) to be listened on.
echo "ports $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)"
for c in "$(command -v getcap 2>/dev/null)" /sbin/getcap /usr/sbin/getcap; do
  [ -n "$c" ] && [ -x "$c" ] && [ -x "$venv/bin/caddy" ] || continue
  case "$("$c" "$venv/bin/caddy" 2>/dev/null)" in
    *cap_net_bind_service*) echo "caddycap yes" ;;
    *) echo "caddycap no" ;;
  esac
  break
done
probe="$dir"
while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
df -Pk "$probe" 2>/dev/null | awk -v at="$probe" 'NR == 2 { print "disk", $4, at }'
echo "user $(id -u) $(id -un)"
if [ -w "$probe" ]; then echo "writable yes"; else echo "writable no"; fi
if ! command -v sudo >/dev/null 2>&1; then echo "sudo none"
elif sudo -n true 2>/dev/null; then echo "sudo nopasswd"
else echo "sudo password"; fi
# What starts onwatch's supervisord again after a reboot (hostprepare.sh's cron line).
line="@reboot /bin/sh \"$dir/boot.sh\" >/dev/null 2>&1"
if ! command -v crontab >/dev/null 2>&1; then echo "boot nocron"
elif [ -f "$dir/boot.sh" ] && crontab -l 2>/dev/null | grep -qxF "$line"; then echo "boot yes"
else echo "boot no"; fi
# Whether logind ends the user's processes (supervisord, Caddy, the apps) at logout.
if [ -d /run/systemd/system ] && command -v loginctl >/dev/null 2>&1; then
  linger=$(loginctl show-user "$(id -un)" -p Linger --value 2>/dev/null)
  kill=$(busctl get-property org.freedesktop.login1 /org/freedesktop/login1 \
    org.freedesktop.login1.Manager KillUserProcesses 2>/dev/null | cut -d' ' -f2)
  echo "logind ${kill:-unknown} ${linger:-unknown}"
fi
# The host's clock, printed last: onwatch compares it with its own as the output comes back.
echo "clock $(date +%s.%N)"
