#!/usr/bin/env bash
# bench/accuracy.py under qemu-user emulating a Haswell CPU (AVX2, no VNNI): onnxruntime detects the CPU
# through CPUID and takes the same kernels it would on such a machine. Needs Debian's qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-x86_64: apt-get install qemu-user" >&2; exit 2; }
exec qemu-x86_64 -cpu Haswell .venv/bin/python bench/accuracy.py "$@" 2> >(grep -v 'TCG doesn' >&2)
