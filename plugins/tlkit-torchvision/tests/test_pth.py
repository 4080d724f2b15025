"""The torch-free, restricted .pth reader: real torch files, hostile files, broken files."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
from tv_checkpoints import legacy_header, save_zip, write_legacy, write_zip

import tlkit
from tlkit_torchvision.pth import load_checkpoint, load_state_dict


class _Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _expected(fixtures):
    with np.load(fixtures / "tensors_expected.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", ["tensors_zip.pth", "tensors_legacy.pth"])
def test_reads_what_torch_wrote_exactly(fixtures, name):
    """Every storage dtype, views with strides and offsets, 0-d and empty tensors (both formats)."""
    expected = _expected(fixtures)
    got = load_state_dict(fixtures / name)
    assert list(got) == list(expected)
    for key, want in expected.items():
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
        assert got[key].flags.writeable and got[key].flags.c_contiguous  # copies, not views


def test_wrapped_checkpoint_keeps_other_entries(fixtures):
    checkpoint = load_checkpoint(fixtures / "tensors_legacy.pth")
    assert checkpoint["epoch"] == 3 and "state_dict" in checkpoint


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_unwraps_and_strips_dataparallel_prefix(tmp_path, wrap):
    tensors = {
        "module.a.weight": np.arange(6, dtype="float32").reshape(2, 3),
        "module.a.bias": np.array([1, 2], dtype="int64"),
    }
    path = save_zip(tmp_path / "ckpt.pth", tensors, wrap=wrap)
    got = load_state_dict(path)
    assert list(got) == ["a.weight", "a.bias"]
    np.testing.assert_array_equal(got["a.weight"], tensors["module.a.weight"])


def test_big_endian_zip(tmp_path):
    tensors = {
        "w": np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4),
        "n": np.array([1, -(1 << 40)], dtype="int64"),
    }
    got = load_state_dict(save_zip(tmp_path / "be.pth", tensors, byteorder="big"))
    for key, want in tensors.items():
        np.testing.assert_array_equal(got[key], want)
        assert got[key].dtype == want.dtype and got[key].dtype.isnative


def test_malicious_zip_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(f"touch {marker}"), protocol=2)
    # The payload is live: plain pickle would run it.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    path = write_zip(tmp_path / "evil.pth", payload)
    with pytest.raises(tlkit.TlkitError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "refusing to load" in message and ".system" in message
    assert "possibly malicious" in message and str(path) in message
    assert not marker.exists()


def test_malicious_legacy_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = write_legacy(tmp_path / "evil.pth", pickle.dumps(_Evil(f"touch {marker}"), protocol=2))
    with pytest.raises(tlkit.TlkitError, match=r"refusing to load .*\.system.*possibly malicious"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "eval"),
        ("subprocess", "Popen"),
        ("torch.nn.modules.linear", "Linear"),
        ("torch", "load"),
        ("numpy", "frombuffer"),
    ],
)
def test_every_other_global_is_refused(tmp_path, module, name):
    data_pkl = pickle.PROTO + b"\x02" + b"c" + f"{module}\n{name}\n".encode() + pickle.STOP
    with pytest.raises(tlkit.TlkitError, match=rf"asks for {module}\.{name}, which a weights file"):
        load_state_dict(write_zip(tmp_path / "x.pth", data_pkl))


def test_hostile_header_pickle_of_a_legacy_file_is_refused(tmp_path):
    """Even the magic-number pickle goes through the restricted unpickler."""
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(f"touch {marker}"), protocol=2)
    # Keep the legacy signature (PROTO 2, LONG1 magic) but follow it with a REDUCE payload.
    header = legacy_header()
    signature = header[:14]
    path = tmp_path / "evil.pth"
    path.write_bytes(signature + pickle.POP + evil[2:])
    with pytest.raises(tlkit.TlkitError, match="refusing to load"):
        load_state_dict(path)
    assert not marker.exists()


def test_garbage_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(os.urandom(4096) + b"not a checkpoint")
    with pytest.raises(tlkit.TlkitError, match=r"garbage\.pth is not a PyTorch checkpoint \("):
        load_state_dict(path)


def test_empty_and_text_files_are_not_checkpoints(tmp_path):
    for name, content in (("empty.pth", b""), ("model.pt", b"version https://git-lfs...\n")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(tlkit.TlkitError, match="is not a PyTorch checkpoint"):
            load_state_dict(path)


def test_truncated_zip(fixtures, tmp_path):
    data = (fixtures / "tensors_zip.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(tlkit.TlkitError, match=r"is not a PyTorch checkpoint \(.*zip"):
        load_state_dict(path)


def test_truncated_legacy_file(fixtures, tmp_path):
    data = (fixtures / "tensors_legacy.pth").read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 20):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(tlkit.TlkitError, match="is not a PyTorch checkpoint"):
            load_state_dict(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(tlkit.TlkitError, match="without a data.pkl"):
        load_state_dict(path)


def test_tensor_claiming_more_than_its_storage_is_refused(tmp_path):
    """A lying size must not make the reader look past the buffer (as_strided would)."""
    path = save_zip(tmp_path / "liar.pth", {"w": np.zeros(4, "float32")}, shapes={"w": (1000, 1000)})
    with pytest.raises(tlkit.TlkitError, match="runs past the end of its storage"):
        load_state_dict(path)


def test_missing_storage_member(tmp_path):
    from tv_checkpoints import pickle_state_dict

    data_pkl, _ = pickle_state_dict({"w": np.zeros(4, "float32")})
    with pytest.raises(tlkit.TlkitError, match="missing from the archive"):
        load_state_dict(write_zip(tmp_path / "nostorage.pth", data_pkl, {}))


def test_not_a_state_dict(tmp_path):
    path = write_zip(tmp_path / "list.pth", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(tlkit.TlkitError, match="not a state dict"):
        load_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(tlkit.TlkitError, match="cannot read weights file"):
        load_state_dict(tmp_path / "nope.pth")
