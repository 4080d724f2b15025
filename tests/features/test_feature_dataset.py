"""The head's dataset over cached features: in memory or read per batch, the same batches.

Large entries are read row by row from the file (``preadv``) instead of being copied into RAM;
this pins down that both ways give identical epochs (order, views, labels), and that the
per-batch reader does not map the entry into the process.
"""

from __future__ import annotations

import numpy as np
import pytest

from tlkit.features.dataset import make_feature_dataset
from tlkit.features.store import FeatureSet


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batches_read_from_the_file_equal_batches_held_in_memory(tmp_path, dtype):
    views, count, shape = 2, 11, (2, 2, 3)
    values = np.arange(views * count * 12, dtype=np.float32).reshape(views, count, *shape) / 7
    path = tmp_path / f"table.{dtype}"
    values.astype(dtype).tofile(path)
    table = np.memmap(path, dtype=dtype, mode="r", shape=values.shape)
    labels = np.arange(count, dtype=np.int32) % 3
    features = FeatureSet(table, labels, key="k", path=tmp_path, hit=True, seconds=0.0)

    def epochs(budget: int | None) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        dataset = make_feature_dataset(
            features, batch_size=4, num_classes=3, shuffle=True, seed=5, in_memory_budget=budget
        )
        return [[(x.numpy(), y.numpy()) for x, y in dataset] for _ in range(3)]

    from tlkit.features.dataset import _EntryRows, _row_reader

    assert isinstance(_row_reader(table, views * count, shape), _EntryRows)  # read with preadv, not mapped
    in_memory, from_file = epochs(None), epochs(0)
    for epoch, (held, read) in enumerate(zip(in_memory, from_file)):
        order = np.random.default_rng(5 + epoch).permutation(count)
        expected = values.astype(dtype).astype(np.float32)[epoch % views, order]
        assert np.array_equal(np.concatenate([x for x, _ in read]), expected)
        for (x_held, y_held), (x_read, y_read) in zip(held, read):
            assert x_read.dtype == np.float32 and np.array_equal(x_held, x_read) and np.array_equal(y_held, y_read)
