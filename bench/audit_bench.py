"""Measure ``tlkit audit`` on a planted noisy Fashion-MNIST set (a benchmark, not a test; issue 20).

The set, written as PNG/JPEG files into a temporary folder (tlkit's ``train/<class>/`` and
``val/<class>/`` layout), from the Fashion-MNIST *training* split (Debian package
``dataset-fashion-mnist``; the same images for every ``--seed``, the planted noise differs):

- ``--images`` N originals in train (N/10 per class) and N/4 in val (``bench/make_data.py``'s subset,
  seed 0);
- **label flips**: 10 % of the train originals get a wrong class folder, half to the class it is most
  confused with (:data:`CONFUSED`: T-shirt↔shirt, pullover↔coat, sandal↔sneaker, ankle boot→sneaker,
  dress→T-shirt, trouser→dress, bag→shirt) and half to a uniformly random other class;
- **exact copies** within train: 20 (byte copies), 15 in the original's class and 5 filed under
  another class (a label conflict: the copy's label is wrong too, so it counts as a label error);
- **near copies** within train: 40, cycling through three transforms of the 28-px original: a JPEG
  q=75 re-encode shifted right by one pixel, a ×2 resize (bicubic, PNG), a 1-px crop of the top and
  left edges (27×27 PNG);
- **leaks**: 15 val images copied byte for byte into train (same class) and 10 near-copied (the same
  three transforms).

Originals of copies are distinct and never flipped, so every planted group is one original and one
copy.  The ground truth: which files are mislabeled (and their true class), the exact and near
pairs, the leaks.

Runs (each in its own Python process, so each pays its own TensorFlow import):

1. ``tlkit.audit(data, base="tv_mobilenet_v2", weights="imagenet", image_size=224, output=None)``
   on a cold feature cache (its own ``TLKIT_CACHE_DIR``);
2. ``tlkit.train(same data, epochs=1)`` on another cold cache: its ``metrics.json`` timings give the
   feature pass (``prepare`` + ``features``) the audit is compared with
   (target: audit total ≤ 1.3 × feature pass + 10 s);
3. the audit again on the first cache, warm (features reused).

Quality, from the cold audit: label issues' precision and recall against the mislabeled files, and
the same for the baseline the issue asks for (a plain "out-of-fold loss is high" ranking, the same
out-of-fold probabilities, cut at the same count); exact duplicates and leaks found; planted near
pairs found and near groups that hold no planted pair ("false groups").  ``--dump DIR`` keeps each
seed's pooled embeddings, given and true labels (``seed<k>.npz``) for studying the label check
offline.

Usage::

    .venv/bin/python bench/audit_bench.py                         # 1,000 + 250 images, seed 0, all runs
    .venv/bin/python bench/audit_bench.py --seeds 0,1,2 --quality-only   # label quality over noise seeds
    .venv/bin/python bench/audit_bench.py --images 200            # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

# The class each class is most often confused with (Fashion-MNIST class indices).
CONFUSED = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 5, 9: 7, 3: 0, 1: 3, 8: 6}
FLIP_FRACTION = 0.10
EXACT_COPIES, EXACT_ACROSS = 20, 5
NEAR_COPIES = 40
LEAKS_EXACT, LEAKS_NEAR = 15, 10
TRANSFORMS = ("jpeg_shift", "resize2", "crop1")
BASE, WEIGHTS, SIZE = "tv_mobilenet_v2", "imagenet", 224


# -- the data set --------------------------------------------------------------------------------


def near_copy(pixels: np.ndarray, kind: str, path_stem: Path) -> Path:
    """Write a near copy of a 28×28 grey image; return its path (suffix by format)."""
    from PIL import Image

    if kind == "jpeg_shift":
        shifted = np.concatenate([pixels[:, :1], pixels[:, :-1]], axis=1)
        path = path_stem.with_suffix(".jpg")
        Image.fromarray(shifted).save(path, quality=75)
    elif kind == "resize2":
        h, w = pixels.shape
        path = path_stem.with_suffix(".png")
        Image.fromarray(pixels).resize((2 * w, 2 * h), Image.Resampling.BICUBIC).save(path)
    elif kind == "crop1":
        path = path_stem.with_suffix(".png")
        Image.fromarray(np.ascontiguousarray(pixels[1:, 1:])).save(path)
    else:
        raise ValueError(kind)
    return path


def build(out: Path, n: int, seed: int) -> dict:
    """Write the noisy set under ``out``; return the ground truth (paths relative to ``out``)."""
    import make_data
    from PIL import Image

    demo = make_data.demo
    names = demo.CLASS_NAMES
    per_train, per_val = make_data.split_sizes(n)
    images = demo.read_idx(demo.DEFAULT_SOURCE / demo.IMAGES_FILE, magic=0x00000803)
    source_labels = demo.read_idx(demo.DEFAULT_SOURCE / demo.LABELS_FILE, magic=0x00000801)
    subset = demo.choose_subset(source_labels, per_train, per_val, 0)  # the same images for every seed
    rng = np.random.default_rng(seed)

    train = [(int(i), c) for c, idx in subset["train"].items() for i in idx]
    val = [(int(i), c) for c, idx in subset["val"].items() for i in idx]
    order = rng.permutation(len(train))
    n_flip = round(FLIP_FRACTION * len(train))
    flipped = set(order[:n_flip].tolist())
    copy_sources = order[n_flip : n_flip + EXACT_COPIES + NEAR_COPIES].tolist()  # never flipped
    truth: dict = {"mislabeled": {}, "exact": [], "near": [], "leaks": [], "flips": {"confused": 0, "random": 0}}

    def rel(p: Path) -> str:
        return p.relative_to(out).as_posix()

    def folder(split: str, c: int) -> Path:
        f = out / split / names[c]
        f.mkdir(parents=True, exist_ok=True)
        return f

    original: dict[tuple[str, int], Path] = {}
    for k, (index, c) in enumerate(train):
        given = c
        if k in flipped:
            if len(truth["mislabeled"]) < n_flip // 2:
                given = CONFUSED[c]
                truth["flips"]["confused"] += 1
            else:
                given = int((c + rng.integers(1, len(names))) % len(names))
                truth["flips"]["random"] += 1
        path = folder("train", given) / f"{index}.png"
        Image.fromarray(images[index]).save(path)
        original[("train", k)] = path
        if given != c:
            truth["mislabeled"][rel(path)] = names[c]
    for k, (index, c) in enumerate(val):
        path = folder("val", c) / f"{index}.png"
        Image.fromarray(images[index]).save(path)
        original[("val", k)] = path

    for j, k in enumerate(copy_sources[:EXACT_COPIES]):
        index, c = train[k]
        target = c if j >= EXACT_ACROSS else int((c + rng.integers(1, len(names))) % len(names))
        copy = folder("train", target) / f"copy-{index}.png"
        shutil.copyfile(original[("train", k)], copy)
        truth["exact"].append([rel(original[("train", k)]), rel(copy)])
        if target != c:
            truth["mislabeled"][rel(copy)] = names[c]
    for j, k in enumerate(copy_sources[EXACT_COPIES:]):
        index, c = train[k]
        kind = TRANSFORMS[j % len(TRANSFORMS)]
        copy = near_copy(images[index], kind, folder("train", c) / f"near-{index}-{kind}")
        truth["near"].append([rel(original[("train", k)]), rel(copy), kind])
    leaked = rng.permutation(len(val))[: LEAKS_EXACT + LEAKS_NEAR].tolist()
    for j, k in enumerate(leaked):
        index, c = val[k]
        if j < LEAKS_EXACT:
            copy = folder("train", c) / f"leak-{index}.png"
            shutil.copyfile(original[("val", k)], copy)
            truth["exact"].append([rel(original[("val", k)]), rel(copy)])
            truth["leaks"].append({"train": rel(copy), "val": rel(original[("val", k)]), "kind": "exact"})
        else:
            kind = TRANSFORMS[j % len(TRANSFORMS)]
            copy = near_copy(images[index], kind, folder("train", c) / f"leak-{index}-{kind}")
            truth["near"].append([rel(original[("val", k)]), rel(copy), kind])
            truth["leaks"].append({"train": rel(copy), "val": rel(original[("val", k)]), "kind": "near"})
    truth["counts"] = {
        "train": sum(1 for _ in (out / "train").rglob("*.*")),
        "val": sum(1 for _ in (out / "val").rglob("*.*")),
    }
    return truth


# -- the runs (child processes) ------------------------------------------------------------------


def child_audit(data: Path, report: Path, dump: Path | None) -> None:
    """One audit; its timings, findings and out-of-fold probabilities into ``report`` (JSON)."""
    started = time.perf_counter()
    import tlkit
    from tlkit.auditing import labels as label_module

    captured: dict = {}
    real = label_module.label_issues

    def capture(paths, y, probs, classes, splits=None):  # noqa: ANN001 - the real function's arguments
        captured.update(paths=list(paths), y=np.asarray(y), probs=np.asarray(probs), classes=list(classes))
        return real(paths, y, probs, classes, splits)

    real_oof = label_module.out_of_fold_probabilities

    def capture_oof(embeddings, *args, **kwargs):  # noqa: ANN001
        captured["embeddings"] = np.asarray(embeddings, np.float32)
        return real_oof(embeddings, *args, **kwargs)

    label_module.label_issues = capture
    label_module.out_of_fold_probabilities = capture_oof
    result = tlkit.audit(data=str(data), base=BASE, weights=WEIGHTS, image_size=SIZE, output=None, verbose=False)
    wall = time.perf_counter() - started
    out = {
        "wall": wall,
        "timings": result.timings,
        "features": result.features,
        "label_issues": [i.path for i in result.label_issues],
        "duplicates": [list(g.paths) for g in result.duplicates],
        "near_duplicates": [list(g.paths) for g in result.near_duplicates],
        "leaks": [{"train": x.train, "val": x.val, "kind": x.kind} for x in result.leaks],
        "outliers": [o.path for o in result.outliers],
        "paths": captured["paths"],
        "given": captured["y"].tolist(),
        "probs": captured["probs"].tolist(),
        "classes": captured["classes"],
    }
    report.write_text(json.dumps(out, default=str))
    if dump is not None:
        np.savez_compressed(
            dump, embeddings=captured["embeddings"], given=captured["y"], paths=np.array(captured["paths"])
        )


def child_train(data: Path, report: Path, output: Path) -> None:
    """One ``tlkit.train(epochs=1)``; its metrics.json timings into ``report``."""
    started = time.perf_counter()
    import tlkit

    result = tlkit.train(
        data=str(data), base=BASE, weights=WEIGHTS, image_size=SIZE, epochs=1, output=str(output), verbose=False
    )
    wall = time.perf_counter() - started
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    report.write_text(json.dumps({"wall": wall, "timings": metrics.get("timings", {})}, default=str))


def run_child(kind: str, data: Path, cache: Path, work: Path, extra: list[str]) -> dict:
    report = work / f"{kind}-{time.time_ns()}.json"
    env = {**os.environ, "TLKIT_CACHE_DIR": str(cache)}
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--report", str(report), *extra]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    out = json.loads(report.read_text())
    out["process_wall"] = time.perf_counter() - started
    return out


# -- scoring -------------------------------------------------------------------------------------


def precision_recall(found: set[str], truth: set[str]) -> tuple[float, float, int]:
    hit = len(found & truth)
    return (hit / len(found) if found else 0.0), (hit / len(truth) if truth else 1.0), len(found)


def score(audit: dict, truth: dict) -> dict:
    mislabeled = set(truth["mislabeled"])
    issues = set(audit["label_issues"])
    paths, given, probs = audit["paths"], np.asarray(audit["given"]), np.asarray(audit["probs"])
    loss = -np.log(np.clip(probs[np.arange(len(given)), given], 1e-12, 1.0))
    top = {paths[i] for i in np.argsort(-loss, kind="stable")[: len(issues)]}
    s: dict = {
        "issues": precision_recall(issues, mislabeled),
        "loss_baseline": precision_recall(top, mislabeled),
        "oof_acc_given": float((probs.argmax(1) == given).mean()),
    }
    exact_found = [any(set(pair) <= set(g) for g in audit["duplicates"]) for pair in truth["exact"]]
    near_found = [any(set(pair[:2]) <= set(g) for g in audit["near_duplicates"]) for pair in truth["near"]]
    planted = [set(p[:2]) for p in truth["near"]]
    false_groups = [g for g in audit["near_duplicates"] if not any(p <= set(g) for p in planted)]
    leak_keys = {(x["train"], x["val"], x["kind"]) for x in audit["leaks"]}
    leaks_found = [(x["train"], x["val"], x["kind"]) in leak_keys for x in truth["leaks"]]
    planted_leak_vals = {x["val"] for x in truth["leaks"]}
    s.update(
        exact=(sum(exact_found), len(exact_found), len(audit["duplicates"])),
        near=(sum(near_found), len(near_found), len(audit["near_duplicates"]), len(false_groups)),
        near_by_kind={
            kind: (
                sum(f for f, p in zip(near_found, truth["near"]) if p[2] == kind),
                sum(1 for p in truth["near"] if p[2] == kind),
            )
            for kind in TRANSFORMS
        },
        false_groups=false_groups,
        leaks=(sum(leaks_found), len(leaks_found), len(audit["leaks"])),
        extra_leaks=[x for x in audit["leaks"] if x["val"] not in planted_leak_vals],
    )
    return s


def fmt_pr(pr: tuple[float, float, int]) -> str:
    return f"{pr[0]:.2f} / {pr[1]:.2f} ({pr[2]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="train originals (a multiple of 10); val gets N/4")
    parser.add_argument("--seeds", default="0", help="noise seeds, e.g. 0 or 0,1,2")
    parser.add_argument("--quality-only", action="store_true", help="only the cold audit (no train, no warm run)")
    parser.add_argument("--dump", type=Path, help="keep each seed's embeddings and labels here (seed<k>.npz)")
    parser.add_argument("--keep", type=Path, help="build the sets and caches here instead of a temp folder")
    parser.add_argument("--child", choices=("audit", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-dump", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "audit":
        child_audit(args.data, args.report, args.child_dump)
        return 0
    if args.child == "train":
        child_train(args.data, args.report, args.child_output)
        return 0

    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(tempfile.mkdtemp(prefix="tlkit-audit-bench-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for seed in seeds:
            data = root / f"data-seed{seed}"
            shutil.rmtree(data, ignore_errors=True)
            truth = build(data, args.images, seed)
            (root / f"truth-seed{seed}.json").write_text(json.dumps(truth, indent=1))
            cache_a, cache_b = root / f"cache-audit-{seed}", root / f"cache-train-{seed}"
            for c in (cache_a, cache_b):
                shutil.rmtree(c, ignore_errors=True)
            extra = ["--child-dump", str(args.dump / f"seed{seed}.npz")] if args.dump else []
            cold = run_child("audit", data, cache_a, root, extra)
            row = {"seed": seed, "truth": truth, "cold": cold, "score": score(cold, truth)}
            if not args.quality_only:
                row["train"] = run_child("train", data, cache_b, root, ["--child-output", str(root / "runs")])
                row["warm"] = run_child("audit", data, cache_a, root, [])
            rows.append(row)
            print(f"seed {seed} done: {json.dumps(row['score'], default=str)}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    t0 = rows[0]["truth"]
    print(
        f"\n{args.images} + {args.images // 4} originals; train {t0['counts']['train']}, val {t0['counts']['val']} files; "
        f"{len(t0['mislabeled'])} mislabeled ({t0['flips']['confused']} confused, {t0['flips']['random']} random, "
        f"{EXACT_ACROSS} cross-class copies); {len(t0['exact'])} exact pairs, {len(t0['near'])} near pairs, "
        f"{len(t0['leaks'])} leaks\n"
    )
    print(
        "| seed | label issues: precision / recall (reported) | high-loss baseline, same count | OOF acc. (given labels) "
        "| exact pairs found (groups) | leaks found (reported) | near pairs found (groups) | false near groups |"
    )
    print("|---|---|---|---:|---|---|---|---:|")
    for r in rows:
        s = r["score"]
        near_total = s["near"][2]
        print(
            f"| {r['seed']} | {fmt_pr(s['issues'])} | {fmt_pr(s['loss_baseline'])} | {s['oof_acc_given']:.3f} "
            f"| {s['exact'][0]}/{s['exact'][1]} ({s['exact'][2]}) | {s['leaks'][0]}/{s['leaks'][1]} ({s['leaks'][2]}) "
            f"| {s['near'][0]}/{s['near'][1]} ({near_total}) | {s['near'][3]} ({s['near'][3] / max(1, near_total):.1%}) |"
        )
    for r in rows:
        s = r["score"]
        by_kind = ", ".join(f"{k} {a}/{b}" for k, (a, b) in s["near_by_kind"].items())
        print(
            f"\nseed {r['seed']}: near pairs by transform: {by_kind}; false groups: {s['false_groups']}; "
            f"unplanted leaks: {s['extra_leaks']}"
        )
    timed = [r for r in rows if "train" in r]
    if timed:
        print(
            "\n| seed | audit cold: total (prepare / features / checks), process | train feature pass: prepare + features, "
            "process (1 epoch) | 1.3 × pass + 10 s | met? | audit warm: total (features), process |"
        )
        print("|---|---|---|---:|---|---|")
        for r in timed:
            a, t, w = r["cold"]["timings"], r["train"]["timings"], r["warm"]["timings"]
            checks = a["total"] - a["prepare"] - a["features"]
            feature_pass = t.get("prepare", 0.0) + t.get("features", 0.0)
            budget = 1.3 * feature_pass + 10
            print(
                f"| {r['seed']} | {a['total']:.1f} s ({a['prepare']:.1f} / {a['features']:.1f} / {checks:.1f}), "
                f"{r['cold']['process_wall']:.1f} s | {feature_pass:.1f} s ({t.get('prepare', 0):.1f} + {t.get('features', 0):.1f}), "
                f"{r['train']['process_wall']:.1f} s | {budget:.1f} s | {'yes' if a['total'] <= budget else 'no'} "
                f"| {w['total']:.1f} s ({w['features']:.1f}), {r['warm']['process_wall']:.1f} s |"
            )
        for r in timed:
            print(f"\nseed {r['seed']} audit cold timings: {r['cold']['timings']}")
            print(f"seed {r['seed']} audit warm timings: {r['warm']['timings']}")
            print(f"seed {r['seed']} train timings: {r['train']['timings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
