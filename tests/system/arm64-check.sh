#!/usr/bin/env bash
# arm64-check.sh [N]: proves the package installs and classifies on aarch64. Builds (or reuses) a Debian
# bookworm arm64 root file system, runs it through qemu-user-static (binfmt_misc), installs the wheel built
# from this working tree into a venv there (runtime dependencies from PyPI's aarch64 wheels, no torch), runs
# `edge-infer classify` on N (default 20) of the shared sample photos, and compares the top-1 with the same
# photos classified here on x86_64. Exits 1 if any top-1 differs. Needs root; run by `make arm64-check`.
set -euo pipefail

n=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "$here/../.." && pwd)
py=${PY:-$tree/.venv/bin/python}
shared=${EDGE_INFER_SHARED:-$tree/../shared}
photos_src=$shared/images/imagenet-samples
work=$tree/build/arm64
root=$work/root
pip_cache=${EDGE_INFER_CACHE:-$HOME/.cache/edge-infer}/pip-arm64

[[ $(id -u) == 0 ]] || { echo "arm64-check: run as root (debootstrap, binfmt_misc, systemd-nspawn)" >&2; exit 1; }
[[ -d $photos_src ]] || { echo "arm64-check: no photos at $photos_src (set EDGE_INFER_SHARED)" >&2; exit 1; }

"$here/binfmt.sh"
trap 'rm -rf "$root"' EXIT  # ~700 MB; unpacked again from the cached tarball next time
t0=$SECONDS
"$here/rootfs.sh" arm64 "$root" > /dev/null
echo "arm64-check: root file system ready in $((SECONDS - t0)) s"

# Every k-th photo, spread over the classes; the same files are classified on both sides.
mkdir -p "$root/root/photos" "$root/root/dist" "$pip_cache"
find "$photos_src" -maxdepth 1 -type f -iname '*.jpeg' | sort \
  | awk -v n="$n" -v total="$(find "$photos_src" -maxdepth 1 -type f -iname '*.jpeg' | wc -l)" \
        'NR % int(total / n) == 1 && c < n { print; c++ }' \
  | xargs -I{} cp {} "$root/root/photos/"
"$py" -m pip wheel --quiet --no-deps -w "$root/root/dist" "$tree"
cp "$tree/tests/system/arm64_decoder.py" "$root/root/"
cp /etc/ssl/certs/ca-certificates.crt "$root/root/host-ca.crt"  # pip inside trusts what the host's pip trusts

# A chroot in a private mount namespace, not systemd-nspawn: with the host's (x86) /proc/cpuinfo and /sys
# CPU lists both visible, onnxruntime's cpuinfo crashes under qemu at import (SIGSEGV); with neither it
# logs that it cannot detect CPU features and goes on. An emulation artifact: a real device has its own.
inner='
  echo "arm64-check: inside: $(uname -m), $(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 --version)"
  python3 -m venv /opt/edge-infer
  /opt/edge-infer/bin/pip install --quiet --disable-pip-version-check /root/dist/edge_infer-*.whl
  /opt/edge-infer/bin/pip list --format=freeze --disable-pip-version-check > /root/versions.txt
  start=$SECONDS
  /opt/edge-infer/bin/edge-infer classify --top-k 1 /root/photos > /root/arm64.jsonl 2> /root/classify.err
  echo "arm64-check: classify of $(ls /root/photos | wc -l) photos under emulation: $((SECONDS - start)) s"
  /opt/edge-infer/bin/edge-infer info 2> /dev/null | python3 -c "import json,sys; i=json.load(sys.stdin)
print(\"arm64-check: onnxruntime\", i[\"onnxruntime\"][\"version\"], i[\"onnxruntime\"][\"providers\"])"
  # The decoders read /proc/self (their own size, to cap it, and what their sandbox shows from inside); no
  # onnxruntime is imported by this step, so /proc can be there.
  mount -t proc proc /proc
  /opt/edge-infer/bin/python /root/arm64_decoder.py "$(ls -d /root/photos/* | head -1)"
  umount /proc
'
t0=$SECONDS
mkdir -p "$root/root/.cache/pip"
unshare --mount --fork bash -euo pipefail -c '
  mount --rbind /dev "$1/dev"
  mount --bind "$2" "$1/root/.cache/pip"
  cp /etc/resolv.conf "$1/etc/resolv.conf"
  exec chroot "$1" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT=/root/host-ca.crt \
    /bin/bash -euo pipefail -c "$3"' - "$root" "$pip_cache" "$inner"
echo "arm64-check: install + classify in the arm64 root took $((SECONDS - t0)) s"
echo "arm64-check: aarch64 wheels installed: $(grep -iE '^(onnxruntime|numpy|pillow|watchdog|prometheus.client|pyyaml)==' "$root/root/versions.txt" | tr '\n' ' ')"

"$tree/.venv/bin/edge-infer" classify --top-k 1 "$root/root/photos" > "$work/x86_64.jsonl"
"$py" - "$work/x86_64.jsonl" "$root/root/arm64.jsonl" <<'PY'
import json, os, sys

def top1(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        p = r["predictions"][0] if r["status"] == "ok" else {"index": None, "label": r["status"], "score": 0.0}
        out[os.path.basename(r["input"])] = p
    return out

x86, arm = top1(sys.argv[1]), top1(sys.argv[2])
same = [k for k in x86 if arm.get(k, {}).get("index") == x86[k]["index"] is not None]
dscore = max(abs(arm[k]["score"] - x86[k]["score"]) for k in same) if same else float("nan")
for k in sorted(x86):
    a = arm.get(k, {})
    mark = "  " if k in same else "!!"
    print(f"{mark} {k:40s} x86 {x86[k]['index']!s:>4} {x86[k]['score']:.3f}  arm64 {a.get('index')!s:>4} {a.get('score', 0):.3f}")
print(f"arm64-check: top-1 identical on {len(same)} of {len(x86)} photos; largest top-1 score difference {dscore:.4f}")
sys.exit(0 if len(same) == len(x86) == len(arm) and same else 1)
PY
