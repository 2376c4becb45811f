#!/usr/bin/env bash
# install.sh [--camera] [--no-start] [SOURCE]: installs or upgrades edge-infer as a systemd service.
# SOURCE is a wheel (edge_infer-*.whl) or a source tree (default: the tree this script is in).
# Idempotent: re-running it with a newer wheel is the upgrade. It never overwrites
# /etc/edge-infer/config.yaml, and it restarts the service only if it was running.
#   - system user and group edge-infer (no login, home /var/lib/edge-infer)
#   - /etc/edge-infer/config.yaml from config/edge-infer.yaml, if absent
#   - /var/lib/edge-infer/{inbox,done,failed,results}, owned by edge-infer; inbox group-writable so that
#     members of the group edge-infer can drop files
#   - a venv at /opt/edge-infer with the runtime dependencies (and PyAV with --camera); never torch
#   - /etc/systemd/system/edge-infer.service, enabled (and started unless --no-start)
# Needs root, python3 with venv (Debian: python3-venv) and access to PyPI (or pip's own configuration).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
extras=""
start=yes
src=""
for arg in "$@"; do
  case $arg in
    --camera) extras="[camera]" ;;
    --no-start) start=no ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
    *) src=$arg ;;
  esac
done
src=${src:-$(dirname "$here")}
prefix=/opt/edge-infer
etc=/etc/edge-infer
state=/var/lib/edge-infer
unit=/etc/systemd/system/edge-infer.service

[[ $(id -u) == 0 ]] || { echo "install.sh: run as root" >&2; exit 1; }
[[ -e "$src" ]] || { echo "install.sh: $src does not exist" >&2; exit 1; }
src=$(cd "$(dirname "$src")" && pwd)/$(basename "$src")
# The unit file and the default config come from the source tree, or from beside this script for a wheel.
tree=$([[ -d "$src" ]] && echo "$src" || dirname "$here")

if ! getent passwd edge-infer > /dev/null; then
  useradd --system --user-group --home-dir "$state" --no-create-home --shell /usr/sbin/nologin edge-infer
  echo "install.sh: created system user edge-infer"
fi

install -d -m 0755 "$etc"
if [[ ! -e "$etc/config.yaml" ]]; then
  install -m 0640 -g edge-infer "$tree/config/edge-infer.yaml" "$etc/config.yaml"
  echo "install.sh: wrote $etc/config.yaml (edit it, then: systemctl restart edge-infer)"
fi

install -d -m 0750 -o edge-infer -g edge-infer "$state"
install -d -m 2770 -o edge-infer -g edge-infer "$state/inbox"
install -d -m 0750 -o edge-infer -g edge-infer "$state/done" "$state/failed" "$state/results"

# A venv made by another python3 (after an OS upgrade) is rebuilt rather than patched.
if [[ ! -x $prefix/bin/python ]] || ! "$prefix/bin/python" -c 'import sys' 2> /dev/null \
   || [[ $("$prefix/bin/python" -c 'import sys; print(sys.version_info[:2])') != $(python3 -c 'import sys; print(sys.version_info[:2])') ]]; then
  rm -rf "$prefix"
  python3 -m venv "$prefix"
fi
"$prefix/bin/python" -m pip install --quiet --upgrade --disable-pip-version-check "pip>=23"
# --force-reinstall --no-deps of the package itself: a rebuilt wheel with an unchanged version still lands.
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check "$src$extras"
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$src"
[[ -f "$tree/README.md" ]] && install -m 0644 "$tree/README.md" "$prefix/README.md"
echo "install.sh: installed $("$prefix/bin/edge-infer" info | "$prefix/bin/python" -c \
  'import json,sys; i=json.load(sys.stdin); print("edge-infer", i["version"], "onnxruntime", i["onnxruntime"]["version"])')"

install -m 0644 "$tree/systemd/edge-infer.service" "$unit"
systemctl daemon-reload
systemctl enable --quiet edge-infer.service
"$prefix/bin/edge-infer" check-config -c "$etc/config.yaml" \
  || echo "install.sh: fix $etc/config.yaml before starting the service" >&2
if systemctl --quiet is-active edge-infer.service; then
  systemctl restart edge-infer.service && echo "install.sh: restarted edge-infer"
elif [[ $start == yes ]]; then
  systemctl start edge-infer.service && echo "install.sh: started edge-infer"
fi
