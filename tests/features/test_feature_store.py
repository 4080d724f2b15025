"""The feature store: the one owner of the cache's layout, computing each entry once, trusting none blindly.

Also pins down the shape of ``tlkit/features``: no module spells the cache's layout but
``store.py``, and the modules import each other one way (that every lazy import says why is
tests/test_architecture.py's, package-wide).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from tests.support import docstring_nodes
from tlkit.features.store import FEATURE_DTYPES, FeatureStore, cache_root

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tlkit"
STORE_MODULE = PACKAGE / "features" / "store.py"

_SAMPLE = FeatureStore("/cache")
ENTRIES_FOLDER = _SAMPLE.entries_dir.name  # "features"
FILE_NAMES = (
    *(FeatureStore.data_name(dtype) for dtype in FEATURE_DTYPES),  # features.float32, features.float16
    "features.f32",  # the name before entries were named by dtype
    _SAMPLE.meta_path("k").name,  # meta.json
)
_DATA_PREFIX = re.compile(r"(^|/)" + re.escape(ENTRIES_FOLDER) + r"\.$")  # f"features.{dtype}"
_FOLDER_IN_PATH = re.compile(r"/" + re.escape(ENTRIES_FOLDER) + r"(/|$)")  # f"{root}/features/{key}"


# -- one owner of the layout ---------------------------------------------------------------


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _store_layout_literals(path: Path) -> list[str]:
    """String literals (docstrings aside) that spell a feature-store file, or the entries folder in a path."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = docstring_nodes(tree)
    hits = []

    def hit(node: ast.AST, what: str) -> None:
        hits.append(f"{_shown(path)}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if any(name in node.value for name in FILE_NAMES) or _FOLDER_IN_PATH.search(node.value):
                hit(node, repr(node.value[:60]))
        elif isinstance(node, ast.JoinedStr):  # f"features.{dtype}"
            for part, after in zip(node.values, node.values[1:]):
                if (
                    isinstance(part, ast.Constant)
                    and isinstance(after, ast.FormattedValue)
                    and _DATA_PREFIX.search(str(part.value))
                ):
                    hit(node, f"f-string {part.value!r}{{...}}")
        elif (  # root / "features"
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and node.right.value == ENTRIES_FOLDER
        ):
            hit(node, f"/ {ENTRIES_FOLDER!r}")
        elif (  # os.path.join(root, "features"), root.joinpath("features")
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("join", "joinpath")
            and any(isinstance(a, ast.Constant) and a.value == ENTRIES_FOLDER for a in node.args)
        ):
            hit(node, f"join(..., {ENTRIES_FOLDER!r})")
    return hits


def test_only_the_feature_store_spells_the_cache_layout():
    hits = [hit for path in _modules() if path != STORE_MODULE for hit in _store_layout_literals(path)]
    assert hits == [], "use FeatureStore's paths and names instead:\n" + "\n".join(hits)


def test_the_layout_check_catches_a_spelled_name(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""An entry is features.float32 + meta.json: fine in a docstring."""\n'
        "import os\n"
        'A = root / "features"\n'
        'B = entry / "meta.json"\n'
        'C = f"features.{dtype}"\n'
        'D = "features.float16"\n'
        'E = os.path.join(cache, "features", key)\n'
        'F = f"{cache}/features/{key}"\n'
        'G = "features.f32"\n'
        'FINE = ("features", f"computing {name} features", "features." + "...")\n'
    )
    hits = _store_layout_literals(sample)
    assert sorted(int(h.split(":")[1]) for h in hits) == [3, 4, 5, 6, 7, 8, 9], hits


# -- the modules import one way ----------------------------------------------------------------


def _feature_imports(path: Path) -> set[str]:
    """The ``tlkit.features`` modules ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tlkit.features"):
            if node.module == "tlkit.features":
                found.update(f"tlkit.features.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tlkit.features."))
    return found


def test_the_feature_modules_import_each_other_without_a_cycle():
    graph = {f"tlkit.features.{p.stem}": _feature_imports(p) for p in (PACKAGE / "features").glob("*.py")}
    helpers = {"tlkit.features.memory", "tlkit.features.rows", "tlkit.features.integrity"}  # helpers, no layout
    assert graph["tlkit.features.store"] <= helpers, "the store depends on no other feature module"
    assert all(graph[helper] == set() for helper in helpers), "the store's helpers import no feature module"
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module not in done:
            for imported in sorted(graph.get(module, ())):
                visit(imported, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


# -- the store -------------------------------------------------------------------------------


class CountingEngine:
    """The base on TensorFlow, counting its calls."""

    name = "tensorflow"

    def __init__(self, feature_model) -> None:
        from tlkit.features.engines import TensorFlowEngine

        self._engine = TensorFlowEngine(feature_model)
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self._engine(batch)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A random-weight MobileNetV2's feature model, and 6 tiny images (files and pixels)."""
    from PIL import Image

    from tlkit.api import resolve_head
    from tlkit.model.builder import assemble
    from tlkit.registry.manager import get_registry
    from tlkit.testing import make_image_folder

    folder = make_image_folder(tmp_path_factory.mktemp("images"), per_class=3, val_per_class=0, size=32)
    files = sorted((folder / "train").rglob("*.png"))
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in files])
    head, params = resolve_head("linear", {})
    parts = assemble(get_registry().base("mobilenet_v2"), head, 2, image_size=32, weights=None, head_params=params)
    return parts.cached_model, files, pixels


def _key(model, files, **extra) -> str:
    """The key of "these files' features under this base, size and weights" (what a plan keys by)."""
    from tlkit.features.fingerprint import entry_key, files_fingerprint, weights_fingerprint

    parts = {"base": "mobilenet_v2", "image_size": 32, "weights": weights_fingerprint(model), "engine": "tensorflow"}
    return entry_key({**parts, "files": files_fingerprint(files), **extra})


def _compute(store: FeatureStore, model, files, pixels, engine, **options):
    key = _key(model, files, **({"dtype": options["dtype"]} if "dtype" in options else {}))
    return store.load_or_compute(
        key=key,
        pixels=pixels,
        labels=np.arange(len(files)) % 2,
        feature_shape=tuple(model.output.shape[1:]),
        engine=engine,
        batch_size=4,
        describe={"base": "mobilenet_v2", "image_size": 32, "split": "train"},
        **options,
    )


def test_features_are_computed_once_then_read_from_the_store(base, tmp_path):
    model, files, pixels = base
    store, engine = FeatureStore(tmp_path / "cache"), CountingEngine(model)
    first = _compute(store, model, files, pixels, engine)
    assert not first.hit and engine.calls == 2  # 6 images, 4 per call
    assert first.path == store.entry_path(first.key) and first.path.parent.parent == store.root
    assert sorted(p.name for p in first.path.iterdir()) == ["features.float32", "meta.json"]
    second = _compute(store, model, files, pixels, engine)
    assert second.hit and engine.calls == 2, "a cached entry ran the base again"
    assert second.key == first.key and second.seconds == 0.0
    np.testing.assert_array_equal(np.asarray(second.features), np.asarray(first.features))
    expected = np.asarray(model(pixels.astype(np.float32), training=False))
    np.testing.assert_allclose(np.asarray(second.features[0]), expected, rtol=1e-5, atol=1e-6)
    assert store.verify(first.key) and store.meta(first.key)["split"] == "train"
    np.testing.assert_array_equal(np.asarray(store.lookup(first.key)), np.asarray(first.features))


def test_a_float16_entry_is_named_by_its_dtype_and_half_the_size(base, tmp_path):
    model, files, pixels = base
    store, engine = FeatureStore(tmp_path / "cache"), CountingEngine(model)
    full = _compute(store, model, files, pixels, engine)
    half = _compute(store, model, files, pixels, engine, dtype="float16")
    assert not half.hit and half.key != full.key and half.features.dtype == np.float16
    assert sorted(p.name for p in half.path.iterdir()) == ["features.float16", "meta.json"]
    assert store.data_path(half.key, "float16").stat().st_size * 2 == store.data_path(full.key).stat().st_size
    assert store.meta(half.key)["dtype"] == "float16"
    np.testing.assert_allclose(np.asarray(half.features, np.float32), np.asarray(full.features), rtol=2e-3, atol=1e-3)
    assert _compute(store, model, files, pixels, engine, dtype="float16").hit


def test_a_damaged_entry_is_never_trusted_and_is_recomputed(base, tmp_path):
    model, files, pixels = base
    store, engine = FeatureStore(tmp_path / "cache"), CountingEngine(model)
    first = _compute(store, model, files, pixels, engine)
    expected = np.array(first.features)
    del first  # (the memmap)
    key = _key(model, files)
    data = store.data_path(key)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte flipped: same size, another SHA-256
    data.write_bytes(bytes(raw))
    assert store.lookup(key) is None and not store.verify(key)
    fixed = _compute(store, model, files, pixels, engine)
    assert not fixed.hit and engine.calls == 4, "a damaged entry was trusted"
    np.testing.assert_array_equal(np.asarray(fixed.features), expected)
    assert _compute(store, model, files, pixels, engine).hit and engine.calls == 4


def test_an_entry_with_the_old_file_name_is_a_miss(tmp_path):
    store = FeatureStore(tmp_path)
    store.publish("k", np.ones((1, 3, 2), np.float32), {"split": "val"})
    assert store.verify("k")
    store.data_path("k").rename(store.entry_path("k") / "features.f32")
    assert store.lookup("k") is None


def test_entries_lists_what_the_store_holds_and_clear_empties_it(tmp_path):
    store = FeatureStore(tmp_path / "cache")
    assert store.entries() == [] and store.clear() == (0, 0)  # nothing there yet: no error
    store.publish("b", np.zeros((1, 4, 3), np.float16), {"split": "train", "base": "mobilenet_v2"})
    store.publish("a", np.zeros((2, 4, 3), np.float32), {"split": "val"})
    (store.entries_dir / ".tmp-c-crashed").mkdir()  # a crashed writer's leftovers: never listed
    store.models_dir.mkdir()
    store.model_path("base.onnx").write_bytes(b"onnx")
    listed = store.entries()
    assert [(e["kind"], e["name"]) for e in listed] == [("features", "a"), ("features", "b"), ("onnx", "base.onnx")]
    a, b, model = listed
    assert a["shape"] == [2, 4, 3] and a["dtype"] == "float32" and a["bytes"] > 2 * 4 * 3 * 4
    assert b["dtype"] == "float16" and b["base"] == "mobilenet_v2" and b["path"] == str(store.entry_path("b"))
    assert model["bytes"] == 4
    entries, freed = store.clear()
    assert entries == 3 and freed == sum(e["bytes"] for e in listed)  # (the leftover folder is empty)
    assert store.entries() == [] and not any(store.entries_dir.iterdir()) and not any(store.models_dir.iterdir())


def test_a_pooled_entry_is_made_from_the_cached_map(tmp_path):
    store = FeatureStore(tmp_path)
    feature_map = np.arange(2 * 3 * 2 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 2, 4)  # views, N, h, w, C
    store.publish("map", feature_map, {})
    assert store.lookup("avg") is None and store.lookup("avg", pooled_from="absent", pooling="avg") is None
    pooled = store.lookup("avg", pooled_from="map", pooling="avg", describe={"split": "val"})
    np.testing.assert_allclose(np.asarray(pooled), feature_map.mean(axis=(2, 3)))
    assert store.meta("avg")["pooled_from"] == "map" and store.meta("avg")["split"] == "val"
    assert store.verify("avg")  # published like any entry
    maxed = store.lookup("max", pooled_from="map", pooling="max")
    np.testing.assert_array_equal(np.asarray(maxed), feature_map.max(axis=(2, 3)))


def test_the_default_store_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "mine"))
    assert FeatureStore().root == cache_root() == tmp_path / "mine"
    assert FeatureStore(tmp_path / "other").entry_path("k").is_relative_to(tmp_path / "other")
    assert FeatureStore.part_key("k", 1, 3) != FeatureStore.part_key("k", 2, 3)


# -- per-image reuse across entries --------------------------------------------------------


def _hashes(files) -> list[str]:
    from tlkit.features.fingerprint import file_hashes

    return file_hashes(files)


def _family_compute(store, model, files, pixels, engine, family="fam", **options):
    hashes = _hashes(files)
    return store.load_or_compute(
        key=_key(model, files, **options.pop("extra", {})),
        pixels=pixels,
        labels=np.arange(len(files)) % 2,
        feature_shape=tuple(model.output.shape[1:]),
        engine=engine,
        batch_size=4,
        describe={"split": "train"},
        family=family,
        hashes=hashes,
        **options,
    )


def test_an_entry_records_its_family_and_images_and_the_listing_leaves_the_hashes_out(base, tmp_path):
    model, files, pixels = base
    store = FeatureStore(tmp_path / "cache")
    first = _family_compute(store, model, files, pixels, CountingEngine(model))
    meta = store.meta(first.key)
    assert meta["family"] == "fam" and meta["file_hashes"] == _hashes(files)
    (listed,) = store.entries()
    assert listed["family"] == "fam" and "file_hashes" not in listed
    # an entry written before these fields existed takes no part, and is still a hit
    store.publish("old", np.ones((1, 2, 3), np.float32), {"split": "val"})
    assert store.lookup("new", family="fam", hashes=["x", "y"]) is None and store.verify("old")


def test_a_missing_entry_is_assembled_from_the_rows_of_its_family(base, tmp_path):
    model, files, pixels = base
    store, engine = FeatureStore(tmp_path / "cache"), CountingEngine(model)
    a = _family_compute(store, model, files[:4], pixels[:4], engine)
    b = _family_compute(store, model, files[3:], pixels[3:], engine)
    calls = engine.calls
    wanted = [files[5], files[0], files[4], files[2]]  # from both, reordered, some left out
    hashes = _hashes(wanted)
    assert store.lookup("derived", family="other", hashes=hashes) is None  # another family never mixes
    found = store.lookup("derived", family="fam", hashes=hashes, describe={"split": "val"})
    assert engine.calls == calls and found.shape == (1, 4, *a.features.shape[2:])
    expected = np.concatenate(
        [np.asarray(b.features[0, [2]]), a.features[0, [0]], b.features[0, [1]], a.features[0, [2]]]
    )
    np.testing.assert_array_equal(np.asarray(found[0]), expected)
    meta = store.meta("derived")
    assert sorted(meta["derived_from"]) == sorted([a.key, b.key]) and meta["computed_images"] == 0
    assert meta["file_hashes"] == hashes and meta["family"] == "fam" and meta["split"] == "val"
    assert store.verify("derived")  # published like any entry, and in the family itself
    assert store.lookup("missing-one", family="fam", hashes=[*hashes, "0" * 32]) is None


def test_only_the_missing_images_go_through_the_base(base, tmp_path):
    model, files, pixels = base
    store, engine = FeatureStore(tmp_path / "cache"), CountingEngine(model)
    whole = np.array(_family_compute(store, model, files, pixels, CountingEngine(model)).features)
    store.clear()
    first = _family_compute(store, model, files[:4], pixels[:4], engine)
    assert first.computed_images is None and engine.calls == 1
    done = []
    grown = store.load_or_compute(
        key="grown",
        pixels=pixels,
        labels=np.arange(6) % 2,
        feature_shape=tuple(model.output.shape[1:]),
        engine=engine,
        batch_size=4,
        progress=done.append,
        family="fam",
        hashes=_hashes(files),
    )
    assert not grown.hit and grown.computed_images == 2 and grown.derived_from == 1
    assert engine.calls == 2 and sum(done) == 6  # one batch of the 2 new images; progress over all 6
    np.testing.assert_array_equal(np.asarray(grown.features[0, :4]), np.asarray(first.features[0]))
    np.testing.assert_allclose(np.asarray(grown.features), whole, rtol=1e-5, atol=1e-6)
    assert store.meta("grown")["computed_images"] == 2 and store.verify("grown")


def test_a_damaged_entry_is_never_used_to_assemble_another(base, tmp_path):
    model, files, pixels = base
    store, engine = FeatureStore(tmp_path / "cache"), CountingEngine(model)
    first = _family_compute(store, model, files, pixels, engine)
    expected = np.array(first.features)
    del first
    data = store.data_path(_key(model, files))
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # the last image's features: same size, another SHA-256
    data.write_bytes(bytes(raw))
    hashes = _hashes(files[:3])
    assert store.lookup("derived", family="fam", hashes=hashes) is None
    assert not store.entry_path("derived").exists()
    again = store.load_or_compute(
        key="derived",
        pixels=pixels[:3],
        labels=np.arange(3),
        feature_shape=expected.shape[2:],
        engine=engine,
        batch_size=4,
        family="fam",
        hashes=hashes,
    )
    assert not again.hit and again.computed_images is None and engine.calls == 3  # all computed again
    np.testing.assert_allclose(np.asarray(again.features), expected[:, :3], rtol=1e-5, atol=1e-6)
    assert "derived_from" not in store.meta("derived")


def test_rows_of_another_dtype_or_shape_are_never_mixed(tmp_path):
    store = FeatureStore(tmp_path)
    store.publish("f16", np.ones((1, 2, 3), np.float16), FeatureStore.family_fields("fam", ["a", "b"]))
    store.publish("wide", np.ones((1, 1, 4), np.float32), FeatureStore.family_fields("fam", ["c"]))
    store.publish("two-views", np.ones((2, 1, 3), np.float32), FeatureStore.family_fields("fam", ["c"]))

    class Engine:
        name, calls = "fake", 0

        def __call__(self, batch):
            Engine.calls += len(batch)
            return np.full((len(batch), 3), 7.0, np.float32)

    got = store.load_or_compute(
        key="k",
        pixels=np.zeros((3, 2, 2, 3), np.uint8),
        labels=np.arange(3),
        feature_shape=(3,),
        engine=Engine(),
        family="fam",
        hashes=["a", "b", "c"],
    )
    assert Engine.calls == 3 and np.all(np.asarray(got.features) == 7.0)  # float32 wanted: nothing reusable


def test_replacing_a_damaged_entry_while_another_writer_replaces_it_too(tmp_path, monkeypatch):
    """Two processes finish the same entry over a damaged one: the other's lands between this one's
    removal and rename.  This one keeps the other's (valid) entry instead of failing."""
    store, other = FeatureStore(tmp_path), FeatureStore(tmp_path)
    store.publish("k", np.ones((1, 3, 2), np.float32), {"split": "val"})
    data = store.data_path("k")
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert store.lookup("k") is None

    remove = FeatureStore.remove

    def remove_then_the_other_publishes(self, key):
        remove(self, key)
        monkeypatch.setattr(FeatureStore, "remove", remove)  # once
        other.publish(key, np.full((1, 3, 2), 2.0, np.float32), {"split": "val"})

    monkeypatch.setattr(FeatureStore, "remove", remove_then_the_other_publishes)
    store.publish("k", np.full((1, 3, 2), 2.0, np.float32), {"split": "val"})
    assert store.verify("k")
    np.testing.assert_array_equal(np.asarray(store.lookup("k")), np.full((1, 3, 2), 2.0, np.float32))
    assert [p.name for p in store.entries_dir.iterdir()] == ["k"]  # and no building folder left
