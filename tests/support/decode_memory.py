"""What decoding one image costs in resident memory, measured in a fresh interpreter per image.

A fresh process per case keeps the measurements independent: freed pages stay in a process's heap, so a
second decode in the same process would be measured against the first one's leftovers. Shared by the
tests (tests/unit/test_decode_cost.py) and ``bench/decode_memory.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

# Runs in the child: import everything first (Pillow's plugins too), read the file, then reset the
# high-water mark (Linux 4.0+: writing 5 to clear_refs), so that the peak counts decoding alone, not the
# interpreter and its imports.
_CHILD = r"""
import importlib.util, json, sys, time
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0
path, module_file = sys.argv[1], sys.argv[2]
if module_file:
    spec = importlib.util.spec_from_file_location("edge_infer.decoding._measured", module_file)
    pre = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(pre)
else:
    import edge_infer.decoding.preprocess as pre
from edge_infer.errors import InputError
from PIL import Image
Image.init()  # every plugin imported once, as in a daemon that has decoded a few files
data = open(path, "rb").read()
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass  # no reset: the peak then includes the imports, which only overstates the growth
before = status("VmRSS")
t0 = time.perf_counter()
try:
    pre.crop_pixels(data, pre.PreprocessSpec())
    outcome = "ok"
except InputError as e:
    outcome = f"{e.kind}: {e.message}"
print(json.dumps({"growth_mb": status("VmHWM") - before, "seconds": time.perf_counter() - t0,
                  "outcome": outcome}))
"""


def peak_growth(path: Path, module_file: Path | None = None, python: str = sys.executable) -> dict:
    """``{"growth_mb", "seconds", "outcome"}`` of ``crop_pixels`` on ``path`` in a fresh interpreter.

    ``module_file``: another version of ``edge_infer/model/preprocess.py`` (a past commit's) to measure
    instead of the installed one.
    """
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([python, "-c", _CHILD, str(path), str(module_file or "")], capture_output=True,
                         text=True, cwd=root, timeout=300)
    if out.returncode:
        raise RuntimeError(f"measuring {path.name} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def _palette_transparent(path: Path) -> None:
    from PIL import Image

    img = Image.new("P", (7000, 7000), 0)
    img.putpalette([255, 255, 255, 200, 30, 30, 30, 160, 60] + [0] * 759)
    img.paste(1, (1000, 1000, 3000, 3000))
    img.paste(2, (4000, 4000, 6000, 6500))
    img.save(path, transparency=0)


def _rgba(path: Path) -> None:
    from PIL import Image

    img = Image.new("RGBA", (7000, 7000), (10, 20, 30, 128))
    img.paste((200, 100, 0, 255), (1000, 1000, 3000, 3000))
    img.save(path)


def _grey16(path: Path) -> None:
    from PIL import Image

    ramp = np.linspace(0, 65535, 7000, dtype=np.uint16)
    Image.fromarray(np.broadcast_to(ramp, (7000, 7000)).copy()).save(path)


def _jpeg_12mp(path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    small.resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=90)


def _gif_200_frames(path: Path) -> None:
    from PIL import Image

    frames = [Image.new("P", (800, 600), i) for i in range(200)]
    for f in frames:
        f.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    frames[0].save(path, save_all=True, append_images=frames[1:])


def _one_bit(path: Path) -> None:
    from PIL import Image

    img = Image.new("1", (7000, 7000), 1)
    img.paste(0, (1000, 1000, 3000, 3000))
    img.save(path)


# name -> (file name, writer): the cases of bench/decode_memory.py, the two large PNGs also of the test
CASES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "palette+transparency 7000x7000 PNG": ("p_trns_7000.png", _palette_transparent),
    "RGBA 7000x7000 PNG": ("rgba_7000.png", _rgba),
    "16-bit grey 7000x7000 PNG": ("grey16_7000.png", _grey16),
    "12 MP JPEG": ("photo_12mp.jpg", _jpeg_12mp),
    "200-frame GIF 800x600": ("anim_200.gif", _gif_200_frames),
    "1-bit 7000x7000 PNG": ("bilevel_7000.png", _one_bit),
}


def write_case(name: str, folder: Path) -> Path:
    file_name, writer = CASES[name]
    path = folder / file_name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        writer(path)
    return path
