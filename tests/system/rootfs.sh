#!/usr/bin/env bash
# rootfs.sh ARCH DIR: a Debian bookworm root file system (systemd, python3 + venv) for ARCH (amd64, arm64)
# unpacked into DIR. debootstrap runs once per suite+arch+package list; its result is kept as a tarball
# under $EDGE_INFER_CACHE (default ~/.cache/edge-infer) so later runs only unpack it.
# The mirror is the one apt uses on this machine (override: EDGE_INFER_MIRROR), and apt's HTTP proxy, if
# any, is passed on. A foreign ARCH needs qemu-user-static registered with binfmt_misc (see binfmt.sh).
set -euo pipefail

arch=${1:?usage: rootfs.sh ARCH DIR}
dir=${2:?usage: rootfs.sh ARCH DIR}
suite=bookworm
packages=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates

apt_mirror() {
  # deb822 (.sources) first, then one-line sources.list: the first Debian main archive apt is given.
  local url
  url=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)
  [[ -n "$url" ]] || url=$(grep -hsE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                          | awk '{print $2}' | grep -i debian | grep -v security | head -1)
  echo "${url:-http://deb.debian.org/debian}"
}

mirror=${EDGE_INFER_MIRROR:-$(apt_mirror)}
eval "$(apt-config shell proxy Acquire::http::Proxy)"
[[ -n "${proxy:-}" ]] && export http_proxy=$proxy

cache=${EDGE_INFER_CACHE:-$HOME/.cache/edge-infer}/rootfs
key=$(printf '%s %s %s' "$suite" "$arch" "$packages" | sha256sum | cut -c1-12)
tarball=$cache/$suite-$arch-$key.tar

if [[ ! -f "$tarball" ]]; then
  mkdir -p "$cache"
  build=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$build"' EXIT
  echo "rootfs: debootstrap $suite/$arch from $mirror (once; cached as $tarball)" >&2
  start=$SECONDS
  debootstrap --variant=minbase --arch="$arch" --include="$packages" "$suite" "$build/root" "$mirror" \
    > "$build/debootstrap.log" 2>&1 || { tail -30 "$build/debootstrap.log" >&2; exit 1; }
  # A booted container wants a machine id of its own and no stale apt lists.
  rm -rf "$build/root/var/lib/apt/lists/"* "$build/root/var/cache/apt/archives/"*.deb
  : > "$build/root/etc/machine-id"
  tar -C "$build/root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  echo "rootfs: debootstrap took $((SECONDS - start)) s" >&2
fi

rm -rf "$dir"
mkdir -p "$dir"
tar -C "$dir" -xf "$tarball"
echo "$dir"
