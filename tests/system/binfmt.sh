#!/usr/bin/env bash
# binfmt.sh: lets this x86_64 kernel run aarch64 binaries through qemu-user-static (Debian:
# qemu-user-static), so that an arm64 root file system can be built and chrooted into.
# Mounts binfmt_misc if needed and registers qemu-aarch64 from the package's own binfmt.d entry; the F
# flag makes the kernel open the interpreter now, so it works inside a chroot without copying it there.
set -euo pipefail

mnt=/proc/sys/fs/binfmt_misc
[[ -f $mnt/status ]] || mount -t binfmt_misc binfmt_misc "$mnt"
if [[ ! -f $mnt/qemu-aarch64 ]]; then
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [[ -f $conf ]] || { echo "binfmt: $conf missing: apt-get install qemu-user-static" >&2; exit 1; }
  grep -v '^#' "$conf" > "$mnt/register"
fi
grep -q '^enabled' "$mnt/qemu-aarch64" && grep -q 'flags: .*F' "$mnt/qemu-aarch64" \
  || { echo "binfmt: qemu-aarch64 is registered but not enabled with the F flag:" >&2; cat "$mnt/qemu-aarch64" >&2; exit 1; }
echo "binfmt: qemu-aarch64 $(grep '^interpreter' "$mnt/qemu-aarch64")" >&2
