"""Benchmark: tlkit against the classic recipe written in plain Keras, on the same data.

For each base (``--bases``) this driver

1. makes the dataset (``bench/make_data.py``: Fashion-MNIST, ``--images`` train + 25 % val, PNG)
   and one weight file for the base (``bench/make_weights.py``), so that both arms
   train on the same images with byte-identical frozen bases.  ``tv_mobilenet_v2``
   (the tlkit-torchvision plugin's base) needs no weight file: both arms load
   torchvision's real ImageNet weights (``--weights imagenet``: the offline
   ``mobilenet_v2-b0353104.pth``), so its accuracies mean something;
2. runs (a) ``bench/plain_keras_recipe.py`` — the base runs on every image, every epoch;
3. runs (b) ``tlkit train ... --head dense256 --json`` with a fresh, empty
   ``$TLKIT_CACHE_DIR`` (cold: ONNX export + one feature pass + head training);
4. runs (c) ``tlkit train ... --head linear`` on the same data and cache (warm: features reused);
5. runs (d) ``bench/ort_throughput.py`` on the ONNX file tlkit cached: raw ONNX Runtime
   images/s at batch sizes 8/16/32/64, the ceiling for tlkit's feature pass.

Every arm is its own subprocess: its peak RSS is the kernel's high-water mark for that
process (``os.wait4``'s ``ru_maxrss``), and ``/proc/<pid>/status`` is sampled to split
it into anonymous memory and file-backed pages (memory-mapped features and pixels).
``os.getloadavg()`` is recorded at the start and end of each arm: other work on the
machine slows any arm down, so compare ratios measured in one run.

``--rss-test`` instead trains tlkit alone on 5000 (+1250 val) images, ResNet50 +
dense256, 2 epochs, and reports its peak RSS and the size of the feature cache.

Results go to ``bench/.data/results-<timestamp>.json`` (written after every arm).

Usage::

    python bench/bench_recipe.py                      # 1000 images, 10 epochs, both bases
    python bench/bench_recipe.py --quick              # smoke test: 100 images, 2 epochs, 96 px
    python bench/bench_recipe.py --bases tv_mobilenet_v2   # real ImageNet weights (torchvision)
    python bench/bench_recipe.py --rss-test           # 5000 images, ResNet50 + dense256, 2 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_ROOT = HERE / ".data"
BASES = ("mobilenet_v2", "resnet50")
#: Bases with real pretrained weights, found offline by their plugin: no make_weights.py file;
#: both arms are given this ``--weights`` value.  Not run by default (``--bases``).
PRETRAINED_BASES = {"tv_mobilenet_v2": "imagenet"}

# The targets the README states.
TARGET_SPEEDUP = 10.0
TARGET_ORT_RATIO = 0.90
TARGET_WARM_PCT = 15.0
TARGET_RSS_MB = 4096.0


# -- running one arm -------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS / RssAnon / RssFile / RssShmem of ``pid`` in KB (empty once it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


class _RssSampler(threading.Thread):
    """Polls /proc/<pid>/status and keeps the peak of each RSS component."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for key, value in _proc_status(self.pid).items():
                self.peaks[key] = max(self.peaks.get(key, 0), value)
            self.stop.wait(self.interval)


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_arm(name: str, cmd: list[str], *, env: dict[str, str], logs: Path) -> dict[str, Any]:
    """Run ``cmd`` as a child process; return its wall time, CPU time, peak RSS, load and output."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    print(f"  [{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
    load_start = _loadavg()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        sampler = _RssSampler(proc.pid)
        sampler.start()
        # wait4 gives this child's own rusage: ru_maxrss is its peak RSS (KB), however
        # large earlier children were (RUSAGE_CHILDREN would report the max over all of them).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    arm = {
        "command": cmd,
        "returncode": proc.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "sampled_peak_mb": {k: round(v / 1024, 1) for k, v in sampler.peaks.items()},
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "stdout_log": str(out_path),
        "stderr_log": str(err_path),
    }
    print(
        f"    -> rc {arm['returncode']}, {arm['wall_s']} s wall, {arm['cpu_s']} s CPU, "
        f"peak RSS {arm['peak_rss_mb']} MB, load {load_start[0]} → {arm['loadavg_end'][0]}",
        flush=True,
    )
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); stderr tail:\n{tail}")
    arm["json"] = _last_json(out_path.read_text(errors="replace"))
    return arm


def _last_json(stdout: str) -> Any:
    """The JSON document a child printed: the whole output, or its last line that parses."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise RuntimeError("child printed no JSON result")


def _tlkit_command() -> list[str]:
    script = Path(sys.executable).parent / "tlkit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tlkit"]


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


#: PYTHONPATH entries that make the tlkit arms import a snapshot of tlkit (``--tlkit-rev``).
TLKIT_PATH: list[str] = []
#: The torchvision plugin's package folder (base tv_mobilenet_v2), relative to the repository.
TV_PLUGIN = "plugins/tlkit-torchvision/tlkit_torchvision"


def _tlkit_env(**extra: str) -> dict[str, str]:
    env = _child_env(**extra)
    if TLKIT_PATH:
        env["PYTHONPATH"] = os.pathsep.join(TLKIT_PATH + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONSAFEPATH"] = "1"  # no cwd / script folder ahead of the snapshot on sys.path
    return env


def snapshot_tlkit(rev: str) -> dict[str, Any]:
    """Export tlkit at git ``rev`` (``git archive``) and point the tlkit arms at it.

    The source tree can change while a long benchmark runs; a snapshot keeps
    every arm on the same code.  The editable install's import finder comes
    after ``PYTHONPATH`` on ``sys.path``, so the snapshot's ``tlkit`` and
    ``tlkit_builtins`` win; the entry points stay those of the installed dist.
    """
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = DATA_ROOT / "src" / commit[:12]
    paths = ["tlkit", "plugins/tlkit_builtins"]
    # The torchvision plugin (tv_mobilenet_v2) too, where the revision has it: it imports tlkit.
    has_tv = (
        subprocess.run(["git", "cat-file", "-e", f"{commit}:{TV_PLUGIN}"], cwd=REPO, capture_output=True).returncode
        == 0
    )
    if has_tv:
        paths.append(TV_PLUGIN)
    if not all((dest / path).is_dir() for path in paths):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit, *paths], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    TLKIT_PATH[:] = [str(dest), str(dest / "plugins")] + ([str((dest / TV_PLUGIN).parent)] if has_tv else [])
    modules = ["tlkit", "tlkit_builtins"] + (["tlkit_torchvision"] if has_tv else [])
    check = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(modules)}; " + "; ".join(f"print({m}.__file__)" for m in modules)],
        env=_tlkit_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not all(path.startswith(str(dest)) for path in check):
        raise RuntimeError(f"the snapshot in {dest} is not what the tlkit arms import: {check}")
    print(f"tlkit arms use the snapshot of {rev} ({commit[:12]}) in {dest}", flush=True)
    return {"rev": rev, "commit": commit, "path": str(dest)}


# -- set-up ----------------------------------------------------------------------


def ensure_data(n: int, seed: int) -> Path:
    sys.path.insert(0, str(HERE))
    from make_data import make_dataset

    out = DATA_ROOT / f"fmnist-{n}" if seed == 0 else DATA_ROOT / f"fmnist-{n}-seed{seed}"
    started = time.perf_counter()
    make_dataset(out, n, seed)
    print(f"data: {out} ({time.perf_counter() - started:.1f} s)", flush=True)
    return out


def ensure_weights(base: str, init: str, logs: Path) -> tuple[Path, dict[str, Any]]:
    """``bench/.data/<base>.weights.h5`` (seed 0, 224 px), made once per init kind and reused."""
    suffix = "" if init == "bn-calibrated" else f"-{init}"
    path = DATA_ROOT / f"{base}{suffix}.weights.h5"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("init") == init and info.get("seed") == 0:
            return path, info
    arm = run_arm(
        f"{base}-make-weights",
        [sys.executable, str(HERE / "make_weights.py"), "--base", base, "--out", str(path), "--init", init],
        env=_child_env(),
        logs=logs,
    )
    return path, arm["json"]


def pretrained_weights(base: str, logs: Path) -> tuple[str, dict[str, Any]]:
    """``--weights`` value and file record for a base in ``PRETRAINED_BASES`` (nothing is made).

    The file is located by the plugin, in a child with the tlkit arms' environment (so a
    ``--tlkit-rev`` snapshot finds what its arms will load); a clear error if it is missing.
    """
    value = PRETRAINED_BASES[base]
    logs.mkdir(parents=True, exist_ok=True)
    code = (
        "import json; from importlib import metadata; from tlkit_torchvision import weights as w\n"
        "path = w.resolve('imagenet')\n"
        "try:\n    pkg = metadata.version(w.WEIGHTS_PACKAGE)\n"
        "except metadata.PackageNotFoundError:\n    pkg = None\n"
        "print(json.dumps({'file': str(path), 'sha256': w.sha256(path), 'package': w.WEIGHTS_PACKAGE, "
        "'package_version': pkg}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_tlkit_env(), capture_output=True, text=True)
    (logs / f"{base}-locate-weights.stderr").write_text(proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{base}: --weights {value} cannot be used:\n{proc.stderr.strip()[-2000:]}")
    return value, {"init": f"pretrained ({value})", **_last_json(proc.stdout)}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def cache_sizes(cache: Path) -> dict[str, Any]:
    sizes: dict[str, Any] = {"onnx_mb": round(_du(cache / "onnx") / 2**20, 1), "features": {}}
    features = cache / "features"
    if features.is_dir():
        for entry in sorted(features.iterdir()):
            meta_path = entry / "meta.json"
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            sizes["features"][meta.get("split", entry.name)] = {
                "mb": round(_du(entry) / 2**20, 1),
                "shape": meta.get("shape"),
            }
    sizes["total_mb"] = round(_du(cache) / 2**20, 1)
    return sizes


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    versions = {}
    for dist in ("tensorflow", "keras", "onnxruntime", "tf2onnx", "onnx", "numpy", "tlkit"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    git = {}
    try:
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        git["dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git": git,
    }


# -- one base ----------------------------------------------------------------------


def _tlkit_arm(
    name: str, *, data: Path, base: str, head: str, weights: Path | str, args, cache: Path, runs: Path, logs: Path
) -> dict[str, Any]:
    cmd = _tlkit_command() + [
        "train",
        "--data",
        str(data),
        "--base",
        base,
        "--weights",
        str(weights),
        "--head",
        head,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--image-size",
        str(args.image_size),
        "--output",
        str(runs),
        "--json",
    ]
    arm = run_arm(name, cmd, env=_tlkit_env(TLKIT_CACHE_DIR=str(cache)), logs=logs)
    metrics = arm["json"]["metrics"]
    features = metrics.get("features") or {}
    arm["run_dir"] = arm["json"]["run_dir"]
    arm["metrics"] = {
        key: metrics.get(key)
        for key in ("best_val_accuracy", "best_epoch", "final", "train_time_s", "training_path", "num_train", "num_val")
    }
    arm["features"] = features
    arm["timings"] = metrics.get("timings") or {}  # tlkit's own per-phase seconds (metrics.json)
    arm["base_images_per_s"] = (features.get("train") or {}).get("images_per_s")
    arm["best_val_accuracy"] = metrics.get("best_val_accuracy")
    arm["final_val_accuracy"] = (metrics.get("final") or {}).get("val_accuracy")
    del arm["json"]  # the run directory keeps the full result
    return arm


def bench_base(base: str, data: Path, args, stamp: str, record: dict[str, Any], save) -> dict[str, Any]:
    logs = DATA_ROOT / "logs" / stamp
    work = DATA_ROOT / "work" / f"{stamp}-{base}"
    cache, runs = work / "cache", work / "runs"
    shutil.rmtree(work, ignore_errors=True)
    cache.mkdir(parents=True)
    out: dict[str, Any] = {"base": base, "seed": args.seed}
    record["bases"][base] = out

    if base in PRETRAINED_BASES:
        weights, info = pretrained_weights(base, logs)
    else:
        weights, info = ensure_weights(base, args.weights_init, logs)
    out["weights"] = {"path": str(weights), **info}

    if not args.skip_plain:
        plain_epochs = args.plain_epochs or args.epochs
        cmd = [
            sys.executable,
            str(HERE / "plain_keras_recipe.py"),
            "--data",
            str(data),
            "--base",
            base,
            "--weights",
            str(weights),
            "--epochs",
            str(plain_epochs),
            "--batch-size",
            str(args.batch_size),
            "--seed",
            str(args.seed),
            "--image-size",
            str(args.image_size),
        ]
        # tv_mobilenet_v2's plain arm builds its base with the plugin's Keras code: give it the
        # tlkit arms' environment, so that a --tlkit-rev snapshot pins that code for both arms.
        env = _tlkit_env() if base in PRETRAINED_BASES else _child_env()
        arm = run_arm(f"{base}-plain", cmd, env=env, logs=logs)
        result = arm.pop("json")
        arm.update(
            {
                k: result[k]
                for k in (
                    "fit_s",
                    "epoch_s",
                    "base_images_per_s",
                    "best_val_accuracy",
                    "best_epoch",
                    "final_val_accuracy",
                    "num_train",
                    "num_val",
                )
            }
        )
        arm["self_reported_peak_rss_mb"] = result["peak_rss_mb"]
        arm["history"] = result["history"]
        arm["epochs"] = plain_epochs
        if plain_epochs != args.epochs:
            # Extrapolated, and said so: first epoch (includes tracing) + the mean later epoch.
            later = arm["epoch_s"][1:] or arm["epoch_s"]
            fit_full = arm["epoch_s"][0] + sum(later) / len(later) * (args.epochs - 1)
            arm["extrapolated"] = {
                "from_epochs": plain_epochs,
                "to_epochs": args.epochs,
                "fit_s": round(fit_full, 2),
                "wall_s": round(arm["wall_s"] - arm["fit_s"] + fit_full, 2),
            }
        out["plain"] = arm
        save()

    out["tlkit_cold"] = _tlkit_arm(
        f"{base}-tlkit-dense256-cold",
        data=data,
        base=base,
        head="dense256",
        weights=weights,
        args=args,
        cache=cache,
        runs=runs,
        logs=logs,
    )
    out["tlkit_cold"]["cache"] = cache_sizes(cache)
    save()
    models = sorted((cache / "onnx").glob("*.onnx"))
    if args.skip_ort:
        out["ort"] = {"skipped": "--skip-ort"}
    elif models:
        n_images = out["tlkit_cold"]["metrics"]["num_train"]
        ab_images = min(n_images, args.ab_images if args.ab_images is not None else 5 * args.batch_size)
        arm = run_arm(
            f"{base}-ort",
            [
                sys.executable,
                str(HERE / "ort_throughput.py"),
                "--model",
                str(models[0]),
                "--images",
                str(n_images),
                "--batch-sizes",
                args.ort_batch_sizes,
                "--rounds",
                str(args.ort_rounds),
                "--ab-images",
                str(ab_images),
                "--ab-batch-size",
                str(args.batch_size),
            ],
            env=_tlkit_env(),
            logs=logs,
        )
        arm.update(arm.pop("json"))
        out["ort"] = arm
    else:
        out["ort"] = {"skipped": "tlkit cached no .onnx file (feature engine was not ONNX Runtime)"}
    save()

    # Run right after the cold one, so that the ORT numbers sit next to tlkit's feature pass.
    out["tlkit_warm"] = _tlkit_arm(
        f"{base}-tlkit-linear-warm",
        data=data,
        base=base,
        head="linear",
        weights=weights,
        args=args,
        cache=cache,
        runs=runs,
        logs=logs,
    )
    # Optional: the same dense256 training on the same cached features with other seeds —
    # how much best val accuracy moves with shuffling order and dropout alone.
    for seed in _seeds(args.extra_seeds):
        seed_args = argparse.Namespace(**{**vars(args), "seed": seed})
        arm = _tlkit_arm(
            f"{base}-tlkit-dense256-seed{seed}",
            data=data,
            base=base,
            head="dense256",
            weights=weights,
            args=seed_args,
            cache=cache,
            runs=runs,
            logs=logs,
        )
        out.setdefault("tlkit_seeds", {})[str(seed)] = arm
        save()
    out["summary"] = summarize(out, args.epochs)
    save()
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def _seeds(text: str | None) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def summarize(out: dict[str, Any], epochs: int) -> dict[str, Any]:
    cold, warm, plain, ort = out["tlkit_cold"], out["tlkit_warm"], out.get("plain"), out.get("ort", {})
    s: dict[str, Any] = {
        "tlkit_wall_s": cold["wall_s"],
        "tlkit_cpu_s": cold["cpu_s"],
        "tlkit_base_images_per_s": cold["base_images_per_s"],
        "tlkit_peak_rss_mb": cold["peak_rss_mb"],
        "tlkit_best_val_accuracy": cold["best_val_accuracy"],
        "warm_wall_s": warm["wall_s"],
        "warm_pct_of_cold": round(100 * warm["wall_s"] / cold["wall_s"], 1),
        "warm_training_path": warm["metrics"].get("training_path"),
        "warm_feature_cache": {k: (warm["features"].get(k) or {}).get("cache") for k in ("train", "val")},
        "feature_engine": cold["features"].get("engine"),
    }
    if plain:
        ext = plain.get("extrapolated")
        plain_wall = ext["wall_s"] if ext else plain["wall_s"]
        s.update(
            {
                "plain_wall_s": plain_wall,
                "plain_wall_extrapolated": bool(ext),
                "plain_cpu_s": plain["cpu_s"],
                "plain_base_images_per_s": plain["base_images_per_s"],
                "plain_peak_rss_mb": plain["peak_rss_mb"],
                "plain_best_val_accuracy": plain["best_val_accuracy"],
                "plain_epochs": plain["epochs"],
                "speedup_wall": round(plain_wall / cold["wall_s"], 2),
                "speedup_cpu": None if ext else round(plain["cpu_s"] / cold["cpu_s"], 2),
                "base_pass_speedup": round(cold["base_images_per_s"] / plain["base_images_per_s"], 2)
                if cold["base_images_per_s"]
                else None,
                "val_accuracy_delta": round(cold["best_val_accuracy"] - plain["best_val_accuracy"], 4),
            }
        )
    if ort.get("best_images_per_s"):
        s["ort_best_images_per_s"] = ort["best_images_per_s"]
        s["ort_best_batch_size"] = ort["best_batch_size"]
        s["ort_ratio"] = round(cold["base_images_per_s"] / ort["best_images_per_s"], 3)
        bs32 = ort["images_per_s"].get("32")
        s["ort_ratio_same_batch"] = round(cold["base_images_per_s"] / bs32, 3) if bs32 else None
        ab = ort.get("ab") or {}
        if "ratio_best" in ab:
            s["ab_tlkit_pipeline_vs_raw_ort"] = ab["ratio_best"]
    if out.get("tlkit_seeds"):
        accs = {
            str(out.get("seed", 0)): cold["best_val_accuracy"],
            **{seed: arm["best_val_accuracy"] for seed, arm in out["tlkit_seeds"].items()},
        }
        s["tlkit_seed_best_val_accuracy"] = accs
        s["tlkit_seed_range"] = [min(accs.values()), max(accs.values())]
    s["targets"] = {
        "speedup_10x": s.get("speedup_wall") is not None and s["speedup_wall"] >= TARGET_SPEEDUP,
        "accuracy_not_worse": s.get("val_accuracy_delta") is not None and s["val_accuracy_delta"] >= 0,
        "ort_ratio_90pct": s.get("ort_ratio") is not None and s["ort_ratio"] >= TARGET_ORT_RATIO,
        "ab_pipeline_90pct": s.get("ab_tlkit_pipeline_vs_raw_ort") is not None
        and s["ab_tlkit_pipeline_vs_raw_ort"] >= TARGET_ORT_RATIO,
        "warm_15pct": s["warm_pct_of_cold"] <= TARGET_WARM_PCT,
    }
    return s


# -- the RSS test ------------------------------------------------------------------


def rss_test(args, stamp: str, record: dict[str, Any], save) -> dict[str, Any]:
    logs = DATA_ROOT / "logs" / stamp
    data = ensure_data(args.rss_images, args.seed)
    weights, info = ensure_weights("resnet50", args.weights_init, logs)
    work = DATA_ROOT / "work" / f"{stamp}-rss"
    cache, runs = work / "cache", work / "runs"
    shutil.rmtree(work, ignore_errors=True)
    cache.mkdir(parents=True)
    rss_args = argparse.Namespace(**{**vars(args), "epochs": args.rss_epochs})
    arm = _tlkit_arm(
        "rss-resnet50-tlkit-dense256",
        data=data,
        base="resnet50",
        head="dense256",
        weights=weights,
        args=rss_args,
        cache=cache,
        runs=runs,
        logs=logs,
    )
    arm["cache"] = cache_sizes(cache)
    n = arm["metrics"]["num_train"] + arm["metrics"]["num_val"]
    arm["decoded_pixels_mb"] = round(n * args.image_size**2 * 3 / 2**20, 1)
    arm["target_rss_mb"] = TARGET_RSS_MB
    arm["meets_target"] = arm["peak_rss_mb"] <= TARGET_RSS_MB
    arm["weights"] = {"path": str(weights), **info}
    record["rss_test"] = arm
    save()
    if args.rss_second_run:
        # The same run again with the ONNX file already cached but no features: tlkit's
        # memory without the one-off export (tf2onnx), i.e. what a user sees on a new dataset.
        shutil.rmtree(cache / "features", ignore_errors=True)
        again = _tlkit_arm(
            "rss-resnet50-tlkit-dense256-onnx-cached",
            data=data,
            base="resnet50",
            head="dense256",
            weights=weights,
            args=rss_args,
            cache=cache,
            runs=runs,
            logs=logs,
        )
        again["cache"] = cache_sizes(cache)
        again["meets_target"] = again["peak_rss_mb"] <= TARGET_RSS_MB
        record["rss_test_onnx_cached"] = again
        save()
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return arm


# -- reporting -----------------------------------------------------------------------


def _fmt(value: Any, spec: str = "", suffix: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:{spec}}{suffix}"


def print_tables(record: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    for base, out in record["bases"].items():
        s = out.get("summary")
        if not s:
            continue
        print(
            f"\n{base}  ({record['settings']['images']} train images, {record['settings']['epochs']} epochs, "
            f"{record['settings']['image_size']} px, batch {record['settings']['batch_size']}, "
            f"weights: {(out.get('weights') or {}).get('init', '?')})"
        )
        rows = [("", "plain Keras", "tlkit (cold)", "tlkit / plain")]
        if "plain_wall_s" in s:
            wall_note = " (extrap.)" if s["plain_wall_extrapolated"] else ""
            rows += [
                (
                    "wall time",
                    _fmt(s["plain_wall_s"], ".1f", " s") + wall_note,
                    _fmt(s["tlkit_wall_s"], ".1f", " s"),
                    _fmt(s["speedup_wall"], ".1f", "× faster"),
                ),
                (
                    "CPU time",
                    _fmt(s["plain_cpu_s"], ".0f", " s"),
                    _fmt(s["tlkit_cpu_s"], ".0f", " s"),
                    _fmt(s["speedup_cpu"], ".1f", "× less"),
                ),
                (
                    "base pass",
                    _fmt(s["plain_base_images_per_s"], ".1f", " img/s"),
                    _fmt(s["tlkit_base_images_per_s"], ".1f", " img/s"),
                    _fmt(s["base_pass_speedup"], ".1f", "×"),
                ),
                (
                    "peak RSS",
                    _fmt(s["plain_peak_rss_mb"], ".0f", " MB"),
                    _fmt(s["tlkit_peak_rss_mb"], ".0f", " MB"),
                    "",
                ),
                (
                    "best val acc",
                    _fmt(s["plain_best_val_accuracy"], ".3f"),
                    _fmt(s["tlkit_best_val_accuracy"], ".3f"),
                    _fmt(s["val_accuracy_delta"], "+.3f"),
                ),
            ]
        else:
            rows += [
                ("wall time", "—", _fmt(s["tlkit_wall_s"], ".1f", " s"), ""),
                ("base pass", "—", _fmt(s["tlkit_base_images_per_s"], ".1f", " img/s"), ""),
                ("peak RSS", "—", _fmt(s["tlkit_peak_rss_mb"], ".0f", " MB"), ""),
                ("best val acc", "—", _fmt(s["tlkit_best_val_accuracy"], ".3f"), ""),
            ]
        rows.append(
            (
                "warm 2nd run (linear)",
                "",
                _fmt(s["warm_wall_s"], ".1f", " s"),
                _fmt(s["warm_pct_of_cold"], ".1f", " % of cold"),
            )
        )
        if "ort_ratio" in s:
            rows.append(
                (
                    f"raw ORT (best, batch {s['ort_best_batch_size']})",
                    "",
                    _fmt(s["ort_best_images_per_s"], ".1f", " img/s"),
                    _fmt(100 * s["ort_ratio"], ".0f", " % reached by tlkit"),
                )
            )
        if "ab_tlkit_pipeline_vs_raw_ort" in s:
            ab = record["bases"][base]["ort"]["ab"]
            rows.append(
                (
                    f"A/B same session, batch {ab['batch_size']}",
                    "",
                    f"{max(ab['tlkit_pipeline_images_per_s']):.1f} vs {max(ab['raw_images_per_s']):.1f} img/s",
                    _fmt(100 * s["ab_tlkit_pipeline_vs_raw_ort"], ".0f", " % (tlkit pipeline / raw)"),
                )
            )
        if "tlkit_seed_range" in s:
            lo, hi = s["tlkit_seed_range"]
            rows.append(
                (
                    "tlkit best val acc over seeds",
                    "",
                    f"{lo:.3f} – {hi:.3f}",
                    f"seeds {', '.join(str(k) for k in s['tlkit_seed_best_val_accuracy'])}",
                )
            )
        _print_rows(rows)
        phase_rows = _phase_rows(out.get("tlkit_cold") or {}, out.get("tlkit_warm") or {})
        if phase_rows:
            print("  tlkit's own phase times (metrics.json → timings), seconds:")
            _print_rows(phase_rows)
        loads = {
            k: (out[k]["loadavg_start"][0], out[k]["loadavg_end"][0])
            for k in ("plain", "tlkit_cold", "tlkit_warm", "ort")
            if k in out and "loadavg_start" in out[k]
        }
        print("load average (1 min) start→end: " + ", ".join(f"{k} {a}→{b}" for k, (a, b) in loads.items()))
    rss = record.get("rss_test")
    if rss:
        print(
            f"\nRSS test: resnet50 + dense256, {rss['metrics']['num_train']} train + {rss['metrics']['num_val']} val, "
            f"{record['settings']['rss_epochs']} epochs"
        )
        _print_rows(
            [
                (
                    "peak RSS (ru_maxrss)",
                    _fmt(rss["peak_rss_mb"], ".0f", " MB") + f"  (target ≤ {TARGET_RSS_MB:.0f} MB)",
                ),
                (
                    "  of which anon / file-backed (sampled peaks)",
                    f"{_fmt(rss['sampled_peak_mb'].get('RssAnon'), '.0f', ' MB')} / "
                    f"{_fmt(rss['sampled_peak_mb'].get('RssFile'), '.0f', ' MB')}",
                ),
                ("wall time", _fmt(rss["wall_s"], ".1f", " s")),
                ("feature cache on disk", _fmt(rss["cache"]["total_mb"], ".0f", " MB")),
                ("decoded pixels (temp memmap)", _fmt(rss["decoded_pixels_mb"], ".0f", " MB")),
                ("best val acc", _fmt(rss["best_val_accuracy"], ".3f")),
            ]
        )
        again = record.get("rss_test_onnx_cached")
        if again:
            print("  same run, ONNX file already cached (no export), features computed:")
            _print_rows(
                [
                    ("peak RSS (ru_maxrss)", _fmt(again["peak_rss_mb"], ".0f", " MB")),
                    (
                        "  of which anon / file-backed (sampled peaks)",
                        f"{_fmt(again['sampled_peak_mb'].get('RssAnon'), '.0f', ' MB')} / "
                        f"{_fmt(again['sampled_peak_mb'].get('RssFile'), '.0f', ' MB')}",
                    ),
                    ("wall time", _fmt(again["wall_s"], ".1f", " s")),
                ]
            )


#: tlkit's top-level phases (``metrics.json`` → ``timings``) in run order, and the parts
#: timed inside one of them; any other number in ``timings`` is listed after these.
PHASES = ("prepare", "features", "fit", "save_model", "plots", "evaluate_and_report")
SUB_PHASES = {"prepare": ("build_model", "decode", "hash_images")}


def _phase_rows(cold: dict[str, Any], warm: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows ``phase | tlkit cold | tlkit warm`` from the two arms' timings (empty if none).

    The top-level phases, the parts of ``prepare``, their sum against the process's wall time
    (the rest is Python/TensorFlow start-up and exit), and each epoch's ``fit_s`` and
    ``checkpoint_s`` (median, then every epoch in order).
    """
    arms = [(arm.get("timings") or {}, arm.get("wall_s")) for arm in (cold, warm)]
    if not any(t for t, _ in arms):
        return []

    def number(timings: dict[str, Any], key: str) -> str:
        value = timings.get(key)
        return f"{value:.2f}" if isinstance(value, (int, float)) else "—"

    rows: list[tuple[str, ...]] = [("  phase", "tlkit cold", "tlkit warm")]
    listed: set[str] = {"epochs"}
    for phase in PHASES:
        rows.append((f"  {phase}", *(number(t, phase) for t, _ in arms)))
        listed.add(phase)
        for sub in SUB_PHASES.get(phase, ()):
            if any(sub in t for t, _ in arms):
                rows.append((f"    of which {sub}", *(number(t, sub) for t, _ in arms)))
                listed.add(sub)
    others = [k for t, _ in arms for k, v in t.items() if k not in listed and isinstance(v, (int, float))]
    for key in dict.fromkeys(others):
        rows.append((f"  {key}", *(number(t, key) for t, _ in arms)))

    def total(timings: dict[str, Any], wall: Any) -> str:
        phases = [timings[p] for p in PHASES if isinstance(timings.get(p), (int, float))]
        if not phases:
            return "—"
        text = f"{sum(phases):.2f}"
        return f"{text} of {wall:.1f} wall" if isinstance(wall, (int, float)) else text

    rows.append(("  sum of the phases", *(total(t, w) for t, w in arms)))
    epochs = [t.get("epochs") or [] for t, _ in arms]
    if any(epochs):
        for key, label in (("fit_s", "epoch fit_s"), ("checkpoint_s", "epoch checkpoint_s")):
            values = [[e[key] for e in ep if isinstance(e.get(key), (int, float))] for ep in epochs]
            rows.append(
                (
                    f"  {label}: median (sum)",
                    *(f"{sorted(v)[len(v) // 2]:.2f} ({sum(v):.2f})" if v else "—" for v in values),
                )
            )
            rows.append(("    per epoch", *(" ".join(f"{x:.2f}" for x in v) or "—" for v in values)))
        stages = [sorted({e.get("stage") for e in ep} - {None, "head"}) for ep in epochs]
        if any(stages):
            rows.append(("  epoch stages besides head", *(", ".join(st) or "—" for st in stages)))
    return rows


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


# -- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="train images (+25%% val; default %(default)s)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--bases",
        default=",".join(BASES),
        help=f"comma-separated, from {', '.join((*BASES, *PRETRAINED_BASES))} (default %(default)s; "
        "tv_mobilenet_v2 has real ImageNet weights, the others BN-calibrated random ones)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 100 images, 2 epochs, 96 px (overrides those three)"
    )
    parser.add_argument(
        "--rss-test",
        action="store_true",
        help="only the memory test: tlkit, resnet50 + dense256, --rss-images, --rss-epochs",
    )
    parser.add_argument("--rss-images", type=int, default=5000)
    parser.add_argument("--rss-epochs", type=int, default=2)
    parser.add_argument(
        "--no-rss-second-run",
        dest="rss_second_run",
        action="store_false",
        help="skip the RSS test's second run (ONNX file cached, features recomputed)",
    )
    parser.add_argument(
        "--weights-init",
        choices=("bn-calibrated", "random"),
        default="bn-calibrated",
        help="frozen base weights: seeded random, BatchNorm statistics calibrated "
        "(default) or left as initialised (see make_weights.py); not for tv_mobilenet_v2 (ImageNet)",
    )
    parser.add_argument(
        "--plain-epochs", type=int, help="run the plain arm for fewer epochs and extrapolate its time (marked as such)"
    )
    parser.add_argument("--skip-plain", action="store_true", help="tlkit arms only")
    parser.add_argument("--skip-ort", action="store_true", help="no raw ONNX Runtime measurement")
    parser.add_argument(
        "--extra-seeds",
        metavar="S1,S2",
        help="also train tlkit's dense256 head with these seeds on the cached features "
        "(cheap; shows the seed-to-seed spread of val accuracy)",
    )
    parser.add_argument("--ort-batch-sizes", default="8,16,32,64")
    parser.add_argument("--ort-rounds", type=int, default=3, help="rounds of the ORT sweep and A/B (best counts)")
    parser.add_argument("--ab-images", type=int, help="images per A/B round (default 5 x batch size)")
    parser.add_argument(
        "--tlkit-rev",
        metavar="REV",
        help="run the tlkit arms on a snapshot of this git revision (e.g. HEAD) instead of "
        "the working tree, so that edits made during a long run do not leak in",
    )
    parser.add_argument("--keep-cache", action="store_true", help="keep each run's feature cache")
    parser.add_argument("--output", type=Path, help="results JSON (default bench/.data/results-<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.image_size = 100, 2, 96
        if args.rss_test:
            args.rss_images, args.rss_epochs = 200, 1
    known = (*BASES, *PRETRAINED_BASES)
    unknown = [b for b in args.bases.split(",") if b not in known]
    if unknown:
        parser.error(f"unknown base(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    output = (
        args.output
        or DATA_ROOT / f"results-{stamp}{'-rss' if args.rss_test else ''}{'-quick' if args.quick else ''}.json"
    )
    record: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "loadavg_start": _loadavg(),
        "bases": {},
    }

    def save() -> None:
        record["loadavg_last"] = _loadavg()
        tmp = output.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, output)

    print(f"results: {output}", flush=True)
    record["tlkit_source"] = snapshot_tlkit(args.tlkit_rev) if args.tlkit_rev else {"working_tree": str(REPO)}
    if args.rss_test:
        rss_test(args, stamp, record, save)
    else:
        data = ensure_data(args.images, args.seed)
        for base in args.bases.split(","):
            print(f"\n== {base} ==", flush=True)
            bench_base(base, data, args, stamp, record, save)
    record["finished"] = datetime.now().isoformat(timespec="seconds")
    save()
    print_tables(record)
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
