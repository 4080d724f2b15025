"""A training run's features: what keys them (:class:`FeaturePlan`), and getting them from the store.

:func:`lookup_features` finds a run's features from the images' content hashes alone (no
decoding, no engine); :func:`run_features` gets them for decoded splits, computing each miss
once (split over the workers of a multi-worker run, :mod:`tlkit.features.shards`).  The cache
itself is :class:`~tlkit.features.store.FeatureStore`'s.

A split's key covers its exact, ordered images, so any change to the file list misses; but one
clean view's entries also name their :meth:`FeaturePlan.family` (the key without the images)
and their images' hashes, so a miss is assembled from the rows of same-family entries, and
only images never seen under that family go through the base.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.features import engines, shards
from tlkit.features.fingerprint import combined_fingerprint, entry_key, file_hashes, layers_fingerprint
from tlkit.features.store import FeatureSet, FeatureStore
from tlkit.registry.specs import safe_name
from tlkit.version import __version__


@dataclass
class RunFeatures:
    """The cached features a training run uses, and how they were obtained."""

    train: FeatureSet
    val: FeatureSet
    engine: str  # engine name, or "cache" when both splits were cache hits
    engine_reason: str

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.engine, "engine_reason": self.engine_reason}
        for name, fs in (("train", self.train), ("val", self.val)):
            images = len(fs.labels) * fs.views
            out[name] = {
                "cache": "hit" if fs.hit else "computed",
                "views": fs.views,
                "entry": str(fs.path),
                "seconds": round(fs.seconds, 2),
                "images_per_s": round(images / fs.seconds, 1) if fs.seconds else None,
            }
            if fs.derived_from:  # assembled from other entries' rows (per-image reuse)
                out[name]["derived_from"] = fs.derived_from
            if fs.computed_images is not None:  # only these images went through the base
                out[name]["computed_images"] = fs.computed_images
        return out


@dataclass
class FeaturePlan:
    """What keys a run's cached features: everything but the images, plus how to compute misses."""

    parts: Any
    base_name: str
    image_size: int
    engine_choice: str
    views: int  # augmented views of the train split (0: one clean view)
    augmentations: list[str]
    seed: int
    weights_fp: str
    shard: tuple[int, int] = (0, 1)  # (this worker, workers): a multi-worker run splits the pass
    dtype: str = "float32"  # how the entries store the features (float16: half the disk and RAM)
    store: FeatureStore = field(default_factory=FeatureStore)  # where the features are cached
    _hashes: dict[str, str] = field(default_factory=dict, repr=False)  # file → content hash

    def file_hashes(self, files: Sequence[str | Path]) -> list[str]:
        """Each file's content hash, read once per file for the plan's life (hashing reads every image)."""
        missing = [f for f in dict.fromkeys(str(f) for f in files) if f not in self._hashes]
        if missing:
            self._hashes.update(zip(missing, file_hashes(missing)))
        return [self._hashes[str(f)] for f in files]

    def files_fp(self, files: Sequence[str | Path]) -> str:
        """:func:`~tlkit.features.fingerprint.files_fingerprint` of ``files``, from :meth:`file_hashes`."""
        return combined_fingerprint(self.file_hashes(files))

    def _common(self) -> dict[str, Any]:
        common = {
            "tlkit": __version__,
            "base": self.base_name,
            "image_size": self.image_size,
            "weights": self.weights_fp,
            "preprocess": layers_fingerprint(self.parts.preprocess_layers),
        }
        # Keys of float32 map entries stay as they were before these options existed.
        if self.parts.pooling:  # the pooled vector, not the map
            common["pooling"] = self.parts.pooling
        if self.dtype != "float32":
            common["dtype"] = self.dtype
        return common

    def split_plan(self, name: str, files: Sequence[str | Path]) -> dict[str, Any]:
        """The key material of split ``name`` (its images' content hashes included)."""
        augmented = name == "train" and self.views > 0
        return dict(
            self._common(),
            split=name,
            files=self.files_fp(files),
            views=self.views if augmented else 1,
            augmentations=self.augmentations if augmented else [],
            seed=self.seed if augmented else None,
        )

    @staticmethod
    def family(split_plan: dict[str, Any], engine: str) -> str | None:
        """The key of what determines one image's features in split plan ``split_plan`` — all of it
        but which images, in which order and in which split — or None for augmented views (their
        features depend on the view and the seed: such entries are reused only whole)."""
        if split_plan["views"] != 1 or split_plan["augmentations"]:
            return None
        per_image = {k: v for k, v in split_plan.items() if k not in ("split", "files")}
        return entry_key({**per_image, "engine": engine, "rows": "per-image"})

    def expected_engine(self) -> str:
        """The engine a miss would use (part of the key: engines differ by ~1e-6).  The workers of a
        multi-worker run ignore ``auto``'s kept decision, as :func:`engines.make_engine` does for them."""
        return engines.expected_engine(self.engine_choice, self.onnx_path if self.shard[1] == 1 else None)

    @property
    def onnx_path(self) -> Path:
        """Where the store keeps this base exported to ONNX (the same file for every split and run)."""
        preprocess = self._common()["preprocess"]
        pooled = f"-{self.parts.pooling}pool" if self.parts.pooling else ""
        return self.store.model_path(
            f"{safe_name(self.base_name)}-{self.image_size}-{self.weights_fp[:16]}-{preprocess[:8]}{pooled}.onnx"
        )

    def cached(
        self, name: str, files: Sequence[str | Path], engine: str, *, derive: bool = True
    ) -> tuple[str, dict[str, Any], np.ndarray | None]:
        """``(key, split plan, features or None)`` of split ``name`` computed with ``engine``, from the store.

        With ``derive``, a pooling head's missing entry is made from the cached feature *map* of
        the same images when there is one (pooling the map is what the head's own pooling layer
        does), so a linear probe after a ``dense256`` run on the same images runs no base at all.

        A missing entry of one clean view whose images are all in cached entries of its
        :meth:`family` (another file list, split or order of the same images) is assembled from
        their rows: no base runs either.
        """
        split_plan = self.split_plan(name, files)
        key = entry_key({**split_plan, "engine": engine})
        map_key = None
        if derive and self.parts.pooling:
            map_key = entry_key({**{k: v for k, v in split_plan.items() if k != "pooling"}, "engine": engine})
        describe = {"engine": engine, "split": name, "base": self.base_name, "image_size": self.image_size}
        found = self.store.lookup(
            key,
            pooled_from=map_key,
            pooling=self.parts.pooling,
            describe=describe,
            family=self.family(split_plan, engine),
            hashes=self.file_hashes(files),
        )
        return key, split_plan, found


def lookup_features(plan: FeaturePlan, splits: dict[str, tuple[Sequence[Path], np.ndarray]]) -> RunFeatures | None:
    """The run's features when every split is in the cache (``splits``: name → (files, labels)); else None.

    Needs only the files' content hashes — no decoding, no engine — so a second
    run on the same images skips both.
    """
    sets = {}
    for name, (files, labels) in splits.items():
        key, _, cached = plan.cached(name, files, plan.expected_engine())
        if cached is None or cached.shape[1] != len(labels):
            return None
        sets[name] = _hit(plan.store, key, cached, labels)
    return RunFeatures(sets["train"], sets["val"], "cache", "all features were in the cache")


def _hit(store: FeatureStore, key: str, features: np.ndarray, labels: np.ndarray) -> FeatureSet:
    """A cache hit of entry ``key``, saying how many entries it was assembled from (when it was)."""
    derived = (store.meta(key) or {}).get("derived_from")
    count = len(derived) if isinstance(derived, list) else 0
    return FeatureSet(features, labels, key, store.entry_path(key), True, 0.0, derived_from=count)


def _augment_with(augmenter: Any) -> Callable[[np.ndarray, int], np.ndarray]:
    """An ``augment(batch, view)`` callback running the model's augmentation layers in training mode."""

    def augment(batch: np.ndarray, view: int) -> np.ndarray:
        return np.asarray(augmenter(batch, training=True))

    return augment


def run_features(
    plan: FeaturePlan,
    splits: dict[str, Any],
    *,
    batch_size: int,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> RunFeatures:
    """Features of the decoded ``splits`` (``{"train": DecodedSplit, "val": DecodedSplit}``), from the
    cache or computed (and cached) on a miss.

    ``plan.views`` ≥ 1 caches that many augmented views of the train split
    (through ``plan.parts.augmenter``); 0 caches one clean view.
    ``progress(label, total)`` returns a callback advanced by images done.  ``batch_size`` is
    the images per engine call unless the engine has its own (ONNX Runtime on CPU: 8).
    """
    parts, store = plan.parts, plan.store
    engine, reason, engine_name = None, "", "cache"
    sets = {}
    for name, decoded in splits.items():
        # The engine is part of the key, so it is chosen before the lookup; exporting to
        # ONNX (and checking it on two real images) happens only on a miss.
        engine_key = engine.name if engine is not None else plan.expected_engine()
        key, split_plan, cached = plan.cached(name, decoded.files, engine_key, derive=engine is None)
        if cached is not None:
            sets[name] = _hit(store, key, cached, decoded.labels)
            continue
        if engine is None:
            sample = np.asarray(decoded.pixels[:2], dtype=np.float32)
            engine, reason = engines.make_engine(
                parts.cached_model, plan.engine_choice, plan.onnx_path, sample, race=plan.shard[1] == 1
            )
            engine_name = engine.name
            if engine.name != engine_key:  # fell back to TensorFlow: key by what really ran
                key = entry_key({**split_plan, "engine": engine.name})
        augment = _augment_with(parts.augmenter) if split_plan["augmentations"] else None
        index, workers = plan.shard
        share = len(range(index, len(decoded.labels), workers))  # this worker's images
        callback = progress(f"{name} features", share * split_plan["views"]) if progress else None
        common = dict(
            key=key,
            pixels=decoded.pixels,
            feature_shape=tuple(parts.cached_model.output.shape[1:]),
            engine=engine,
            batch_size=getattr(engine, "batch_size", None) or batch_size,
            views=split_plan["views"],
            augment=augment,
            progress=callback,
        )
        describe = {"base": plan.base_name, "image_size": plan.image_size, "split": name}
        family = plan.family(split_plan, engine.name)
        hashes = plan.file_hashes(decoded.files)
        if workers > 1:  # each worker computes its share of every image (no per-image reuse)
            whole = {**describe, **store.family_fields(family, hashes)}
            sets[name] = _computed_by_workers(plan, common, decoded.labels, describe, whole)
        else:
            sets[name] = store.load_or_compute(
                labels=decoded.labels, describe=describe, dtype=plan.dtype, family=family, hashes=hashes, **common
            )
    return RunFeatures(sets["train"], sets["val"], engine_name, reason or "all features were in the cache")


def _computed_by_workers(
    plan: FeaturePlan, common: dict[str, Any], labels: np.ndarray, describe: dict[str, Any], whole: dict[str, Any]
) -> FeatureSet:
    """This worker's part of the split's features, then the whole (see :mod:`tlkit.features.shards`),
    published with ``whole`` as its metadata (the parts get ``describe``)."""
    index, workers = plan.shard
    started = time.perf_counter()
    shards.compute_part(index=index, count=workers, describe=describe, dtype=plan.dtype, store=plan.store, **common)
    features = shards.assemble(key=common["key"], count=workers, total=len(labels), describe=whole, store=plan.store)
    path = plan.store.entry_path(common["key"])
    return FeatureSet(features, labels, common["key"], path, hit=False, seconds=time.perf_counter() - started)


__all__ = ["FeaturePlan", "RunFeatures", "lookup_features", "run_features"]
