"""Measure ``tlkit tune`` (a benchmark, not a test; issue 21, "Measure it").

Data: a class-balanced Fashion-MNIST subset written by ``bench/make_data.py``'s code
(``examples/make_demo_data.py``: ``choose_subset`` + ``write_pngs``, seed 0): ``--images`` N train
images (N/10 per class) and N/2 val images (N/20 per class), 28-px grey PNGs resized to 224 px.
The base is torchvision's ImageNet MobileNetV2 (``tv_mobilenet_v2``, weights ``imagenet``, offline).

Every arm is its own Python process (this script re-run as ``_worker``, calling ``tlkit.tune`` with
``verbose=False`` — the function ``tlkit tune`` runs) with its own ``TLKIT_CACHE_DIR``; wall time is
launch to exit, imports included.  The arms, one after the other in one run:

1. **tune vs plain**: 20 trials of ``head=dense256,mlp,linear``, ``lr=1e-4..1e-2:log``,
   ``head.dropout=0..0.6`` (heads that have it), ``weight_decay=0..1e-2``, 10 epochs, on a cold
   feature cache — vs ONE run of ``bench/plain_keras_recipe.py --base tv_mobilenet_v2 --weights
   imagenet --epochs 10`` on the same folder (the same .pth weights; dense256 head, base run on every
   image every epoch).  ``--plain-epochs K`` runs K epochs and extrapolates to 10 (marked).
2. **base search**: ``base=tv_mobilenet_v2,mobilenet_v2,mobilenet`` with ``--weights none`` (only
   tv_mobilenet_v2 has ImageNet weights offline here), ``lr`` searched, linear head, 5 epochs,
   ``--base-trials`` trials on a cold cache — vs the three feature passes alone, taken from the
   study's own per-base timing (``TuneResult.features[...]['seconds']``: the run's prepare — scan,
   decode — plus the feature pass, ONNX export included).
3. **accuracy**: the best trial's val accuracy (scored once, after tuning on the hold-out) vs
   ``default_val_accuracy`` (the default recipe: dense256, lr 1e-3), seeds 0–2.  Seed 0 is arm 1's
   study; seeds 1 and 2 are ``--acc-trials``-trial studies on arm 1's (warm) cache.
4. **two processes, one SQLite storage**: N (``--shared-trials``) trials of arm 1's space by one
   process vs two processes started together on one ``sqlite:///…`` storage and ``--study``, warm
   cache; then the storage is read with Optuna: trial numbers, states, finished count.
5. **SIGKILL and resume**: a 12-trial study (warm cache) is SIGKILLed once ``--kill-after`` trials are
   finished and another is running; the storage is read; ``--resume`` finishes it to ``--resume-total`` (8) trials;
   every trial finished before the kill must be there, unchanged.

Usage::

    .venv/bin/python bench/tune_bench.py                    # 1,000 + 500 images, all arms
    .venv/bin/python bench/tune_bench.py --images 200 --plain-epochs 2 --acc-trials 4   # a smoke run

Writes ``bench/.data/tune/results-<timestamp>.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DATA_ROOT = ROOT / "bench" / ".data"
HEAD_SPACE = ["head=dense256,mlp,linear", "lr=1e-4..1e-2:log", "head.dropout=0..0.6", "weight_decay=0..1e-2"]
BASES = ["tv_mobilenet_v2", "mobilenet_v2", "mobilenet"]


# ----------------------------------------------------------------------------- worker (child process)


def worker(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    started = time.perf_counter()
    import tlkit

    result = tlkit.tune(**spec, verbose=False)
    out = result.as_dict()
    out["timings"] = dict(result.timings)
    out["features"] = json.loads(json.dumps(result.features, default=str))
    out["notes"] = list(result.notes)
    out["in_process_s"] = round(time.perf_counter() - started, 3)
    Path(out_path).write_text(json.dumps(out, indent=1))
    return 0


# ----------------------------------------------------------------------------- helpers (parent)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def make_data(n: int) -> Path:
    """N train + N/2 val images (N/10 and N/20 per class), make_data.py's source and subset code."""
    sys.path.insert(0, str(ROOT / "bench"))
    import make_data as md  # noqa: PLC0415 - bench/ is not a package

    out = DATA_ROOT / f"fmnist-{n}-{n // 2}"
    per_train, per_val = n // 10, n // 20
    done = all(
        (out / split / name).is_dir() and len(list((out / split / name).glob("*.png"))) == per
        for split, per in (("train", per_train), ("val", per_val))
        for name in md.demo.CLASS_NAMES
    )
    if not done:
        demo = md.demo
        images = demo.read_idx(demo.DEFAULT_SOURCE / demo.IMAGES_FILE, magic=0x00000803)
        labels = demo.read_idx(demo.DEFAULT_SOURCE / demo.LABELS_FILE, magic=0x00000801)
        subset = demo.choose_subset(labels, per_train, per_val, 0)
        demo.prepare_output(out, force=True)
        demo.write_pngs(images, subset, out)
    return out


class Arm:
    """One child process: its wall time (launch to exit) and the 1-min load average around it."""

    def __init__(self, name: str, argv: list[str], cache: Path, logs: Path) -> None:
        self.name, self.cache, self.logs = name, cache, logs
        env = dict(os.environ, TLKIT_CACHE_DIR=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
        logs.mkdir(parents=True, exist_ok=True)
        self.load_before = loadavg()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=open(logs / f"{name}.stdout", "w"),  # noqa: SIM115
            stderr=open(logs / f"{name}.stderr", "w"),  # noqa: SIM115
        )
        self.wall: float | None = None
        self.load_after: float | None = None

    def wait(self) -> int:
        rc = self.proc.wait()
        self.wall = round(time.perf_counter() - self.t0, 2)
        self.load_after = loadavg()
        if rc not in (0, -signal.SIGKILL):
            tail = (self.logs / f"{self.name}.stderr").read_text()[-3000:]
            raise SystemExit(f"arm {self.name} failed (rc {rc}):\n{tail}")
        return rc


def tune_arm(name: str, spec: dict, cache: Path, work: Path, logs: Path) -> Arm:
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    return Arm(name, [PYTHON, __file__, "_worker", str(spec_path), str(work / f"{name}.out.json")], cache, logs)


def read_out(work: Path, name: str) -> dict:
    return json.loads((work / f"{name}.out.json").read_text())


def storage_trials(url: str, study: str) -> list[dict]:
    import optuna  # noqa: PLC0415 - the parent loads Optuna only to read storages

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.load_study(study_name=study, storage=url)
    return [
        {"number": t.number, "state": t.state.name, "value": t.value, "surplus": bool(t.user_attrs.get("surplus"))}
        for t in s.get_trials(deepcopy=False)
    ]


def counts(trials: list[dict]) -> dict:
    out: dict = {}
    for t in trials:
        key = "SURPLUS" if t["surplus"] else t["state"]
        out[key] = out.get(key, 0) + 1
    return out


def finished(trials: list[dict]) -> list[dict]:
    return [t for t in trials if t["state"] in ("COMPLETE", "PRUNED") and not t["surplus"]]


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None else format(x, spec)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="train images (multiple of 20); val = half")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--trials", type=int, default=20, help="arm 1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--plain-epochs", type=int, default=10, help="run the plain arm K epochs, extrapolate to --epochs")
    p.add_argument("--base-trials", type=int, default=9, help="arm 2")
    p.add_argument("--base-epochs", type=int, default=5, help="arm 2")
    p.add_argument("--acc-trials", type=int, default=20, help="arm 3, seeds 1 and 2")
    p.add_argument("--shared-trials", type=int, default=10, help="arm 4")
    p.add_argument("--kill-total", type=int, default=12, help="arm 5: the killed study's --trials")
    p.add_argument("--kill-after", type=int, default=3, help="arm 5: finished trials before SIGKILL")
    p.add_argument("--resume-total", type=int, default=8, help="arm 5: --trials of the resume")
    p.add_argument("--skip", default="", help="comma-separated arms to skip: plain,base,acc,shared,kill")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = DATA_ROOT / "tune" / stamp
    logs = work / "logs"
    work.mkdir(parents=True)
    data = make_data(args.images)
    n_val = args.images // 2
    common = {"data": str(data), "image_size": args.image_size, "epochs": args.epochs}
    head_spec = dict(common, base="tv_mobilenet_v2", weights="imagenet", search=HEAD_SPACE)
    res: dict = {"args": vars(args), "data": str(data), "images": [args.images, n_val], "arms": {}}
    bench_t0 = time.perf_counter()
    loads = [loadavg()]

    def save() -> None:
        (work / "results.json").write_text(json.dumps(res, indent=1, default=str))

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - bench_t0:7.1f} s, load {loadavg():.2f}] {msg}", file=sys.stderr, flush=True)

    # 1. 20 trials, cold cache, vs one plain-Keras run
    cache1 = work / "cache-heads"
    log(f"arm 1: tune {args.trials} trials, cold cache")
    a = tune_arm(
        "tune-heads", dict(head_spec, trials=args.trials, seed=0, output=str(work / "out-heads")), cache1, work, logs
    )
    a.wait()
    loads.append(loadavg())
    o = read_out(work, "tune-heads")
    res["arms"]["tune"] = {"wall_s": a.wall, "load": [a.load_before, a.load_after], "out": o}
    save()
    if "plain" not in skip:
        log(f"arm 1: plain Keras, {args.plain_epochs} epochs")
        plain_json = work / "plain.json"
        pa = Arm(
            "plain",
            [PYTHON, str(ROOT / "bench" / "plain_keras_recipe.py"), "--data", str(data), "--base", "tv_mobilenet_v2",
             "--weights", "imagenet", "--epochs", str(args.plain_epochs), "--image-size", str(args.image_size),
             "--seed", "0", "--json-out", str(plain_json)],
            work / "cache-plain", logs,
        )  # fmt: skip
        pa.wait()
        loads.append(loadavg())
        pj = json.loads(plain_json.read_text())
        wall10 = pa.wall
        if args.plain_epochs != args.epochs:
            ep = pj["epoch_s"]
            steady = sum(ep[1:]) / len(ep[1:]) if len(ep) > 1 else ep[0]
            wall10 = round(pa.wall - pj["fit_s"] + ep[0] + steady * (args.epochs - 1), 2)
        res["arms"]["plain"] = {"wall_s": pa.wall, "wall_10_s": wall10, "extrapolated": args.plain_epochs != args.epochs,
                                "load": [pa.load_before, pa.load_after], "out": pj}  # fmt: skip
        save()

    # 2. base search over 3 bases (weights none), cold cache
    if "base" not in skip:
        log("arm 2: base search")
        spec = dict(common, base=BASES[0], weights="none", head="linear", epochs=args.base_epochs,
                    search=[f"base={','.join(BASES)}", "lr=1e-4..1e-2:log"], trials=args.base_trials, seed=0,
                    output=str(work / "out-bases"))  # fmt: skip
        b = tune_arm("tune-bases", spec, work / "cache-bases", work, logs)
        b.wait()
        loads.append(loadavg())
        res["arms"]["bases"] = {
            "wall_s": b.wall,
            "load": [b.load_before, b.load_after],
            "out": read_out(work, "tune-bases"),
        }
        save()

    # 3. accuracy, seeds 1 and 2 (seed 0 = arm 1), warm cache of arm 1
    if "acc" not in skip:
        res["arms"]["acc"] = {}
        for seed in (1, 2):
            log(f"arm 3: seed {seed}, {args.acc_trials} trials")
            c = tune_arm(f"tune-seed{seed}", dict(head_spec, trials=args.acc_trials, seed=seed,
                                                  output=str(work / f"out-seed{seed}")), cache1, work, logs)  # fmt: skip
            c.wait()
            loads.append(loadavg())
            res["arms"]["acc"][seed] = {"wall_s": c.wall, "out": read_out(work, f"tune-seed{seed}")}
            save()

    # 4. one process vs two on one SQLite storage, warm cache
    if "shared" not in skip:
        n = args.shared_trials
        log(f"arm 4: one process, {n} trials")
        url1 = f"sqlite:///{work / 'one.db'}"
        one = tune_arm("one-process", dict(head_spec, trials=n, seed=0, storage=url1, study="one",
                                           output=str(work / "out-one")), cache1, work, logs)  # fmt: skip
        one.wait()
        loads.append(loadavg())
        log(f"arm 4: two processes, {n} trials")
        url2 = f"sqlite:///{work / 'two.db'}"
        two = [
            tune_arm(
                f"two-process-{i}",
                dict(head_spec, trials=n, seed=0, storage=url2, study="two", output=str(work / f"out-two-{i}")),
                cache1,
                work,
                logs,
            )  # fmt: skip
            for i in (0, 1)
        ]
        t0 = time.perf_counter()
        for t in two:
            t.wait()
        wall2 = round(time.perf_counter() - two[0].t0, 2)
        del t0
        loads.append(loadavg())
        res["arms"]["shared"] = {
            "n": n,
            "one": {"wall_s": one.wall, "timings": read_out(work, "one-process")["timings"],
                    "trials": storage_trials(url1, "one")},
            "two": {"wall_s": wall2, "each_wall_s": [t.wall for t in two],
                    "timings": [read_out(work, f"two-process-{i}")["timings"] for i in (0, 1)],
                    "trials": storage_trials(url2, "two")},
        }  # fmt: skip
        save()

    # 5. SIGKILL mid-study, then resume
    if "kill" not in skip:
        log(f"arm 5: SIGKILL after {args.kill_after} finished trials")
        out5 = work / "out-kill"
        k = tune_arm("kill", dict(head_spec, trials=args.kill_total, seed=0, output=str(out5)), cache1, work, logs)
        folder: Path | None = None
        killed_running = False
        while k.proc.poll() is None:
            time.sleep(0.5)
            if folder is None:
                found = sorted(out5.glob("*/study.db")) if out5.is_dir() else []
                folder = found[0].parent if found else None
                continue
            try:
                tr = storage_trials(
                    f"sqlite:///{folder / 'study.db'}", json.loads((folder / "study.json").read_text())["study"]
                )
            except Exception:  # noqa: BLE001 - the study may not be created yet
                continue
            if len(finished(tr)) >= args.kill_after and any(t["state"] == "RUNNING" for t in tr):
                time.sleep(1.0)  # into the running trial's epochs
                os.kill(k.proc.pid, signal.SIGKILL)
                killed_running = True
                break
        rc = k.wait()
        assert folder is not None
        name = json.loads((folder / "study.json").read_text())["study"]
        url5 = f"sqlite:///{folder / 'study.db'}"
        before = storage_trials(url5, name)
        log("arm 5: resume")
        r = tune_arm("resume", {"resume": str(folder), "trials": args.resume_total}, cache1, work, logs)
        r.wait()
        after = storage_trials(url5, name)
        after_by = {t["number"]: t for t in after}
        kept = [t for t in finished(before) if after_by.get(t["number"]) == t]
        res["arms"]["kill"] = {"rc": rc, "killed_running": killed_running, "before": before, "after": after,
                               "kept": len(kept), "resume_wall_s": r.wall}  # fmt: skip
        save()

    res["bench_wall_s"] = round(time.perf_counter() - bench_t0, 1)
    res["load"] = {"min": min(loads), "max": max(loads)}
    save()
    log("done")
    print(report(res, work))
    return 0


def report(res: dict, work: Path) -> str:
    arms = res["arms"]
    n_train, n_val = res["images"]
    lines = [f"## tune_bench, {n_train} + {n_val} images, results in {work.relative_to(ROOT)}", ""]
    t = arms["tune"]
    o = t["out"]
    states = counts([{"state": x["state"].upper(), "surplus": False} for x in o["trials"]])
    feat = sum(v.get("seconds", 0) for v in o["features"].values())
    lines += ["| arm 1 | wall s | of which: features s | trials s | val scoring s | trials (state) | 1-min load before/after |",
              "|---|---:|---:|---:|---:|---|---|",
              f"| tlkit tune, {len(o['trials'])} trials, cold cache | {t['wall_s']:.1f} | {feat:.1f} | "
              f"{o['timings'].get('trials', 0):.1f} | {o['timings'].get('val', 0):.1f} | {states} | "
              f"{t['load'][0]:.2f} / {t['load'][1]:.2f} |"]  # fmt: skip
    if "plain" in arms:
        pl = arms["plain"]
        ext = f" (ran {pl['out']['epochs']} epochs, extrapolated)" if pl["extrapolated"] else ""
        lines.append(f"| plain Keras recipe, 10 epochs{ext} | {pl['wall_10_s']:.1f} | — | — | — | "
                     f"best val acc {pl['out']['best_val_accuracy']:.3f} | {pl['load'][0]:.2f} / {pl['load'][1]:.2f} |")  # fmt: skip
        lines += ["", f"**tune / plain = {t['wall_s'] / pl['wall_10_s']:.2f}** (target < 1)"]
    if "bases" in arms:
        b = arms["bases"]
        bo = b["out"]
        per = {k: v.get("seconds") for k, v in bo["features"].items()}
        fsum = sum(x or 0 for x in per.values())
        drawn = sorted({x["params"].get("base") for x in bo["trials"]})
        lines += ["", "| arm 2: base search (weights none) | s |", "|---|---:|"]
        lines += [f"| feature pass (prepare + features) {k} | {v:.1f} |" for k, v in per.items()]
        lines += [f"| Σ three feature passes | {fsum:.1f} |",
                  f"| study inside tlkit.tune (timings.total: trials + val scoring + outputs) | {bo['timings'].get('total', 0):.1f} |",
                  f"| whole process (imports included) | {b['wall_s']:.1f} |", "",
                  f"{len(bo['trials'])} trials, bases drawn: {drawn}. **study / Σ features = "
                  f"{bo['timings'].get('total', 0) / fsum:.2f}**, whole process / Σ features = {b['wall_s'] / fsum:.2f} (target < 1.5)"]  # fmt: skip
    lines += ["", "| arm 3: seed | trials | best trial (hold-out) | best trial's params | best val acc | default val acc | Δ |",
              "|---|---:|---:|---|---:|---:|---:|"]  # fmt: skip
    seeds = [(0, o)] + [(int(s), v["out"]) for s, v in arms.get("acc", {}).items()]
    for s, so in seeds:
        bv, dv = so["best_val_accuracy"], so["default_val_accuracy"]
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in so["best"]["params"].items()
        )
        lines.append(f"| {s} | {len(so['trials'])} | {so['best']['value']:.3f} | {params} | {fmt(bv, '.3f')} | "
                     f"{fmt(dv, '.3f')} | {fmt(None if bv is None or dv is None else bv - dv, '+.3f')} |")  # fmt: skip
    if "shared" in arms:
        sh = arms["shared"]
        one, two = sh["one"], sh["two"]
        nums = [x["number"] for x in two["trials"]]
        fin2 = finished(two["trials"])
        lines += ["", f"| arm 4: {sh['n']} trials, warm cache | wall s | trials phase s (each process) | storage: trials by state | numbers unique | finished |",
                  "|---|---:|---|---|---|---:|",
                  f"| one process | {one['wall_s']:.1f} | {one['timings']['trials']:.1f} | {counts(one['trials'])} | "
                  f"{len({x['number'] for x in one['trials']}) == len(one['trials'])} | {len(finished(one['trials']))} |",
                  f"| two processes, one SQLite | {two['wall_s']:.1f} (each {two['each_wall_s']}) | "
                  f"{[x['trials'] for x in two['timings']]} | {counts(two['trials'])} | {len(set(nums)) == len(nums)} | {len(fin2)} |",
                  "", f"**two / one = {two['wall_s'] / one['wall_s']:.2f}** (whole processes); trials phase: "
                  f"{max(x['trials'] for x in two['timings']) / one['timings']['trials']:.2f}"]  # fmt: skip
    if "kill" in arms:
        k = arms["kill"]
        fb = finished(k["before"])
        lines += ["", "| arm 5: SIGKILL then --resume | |", "|---|---|",
                  f"| killed mid-trial | {k['killed_running']} (rc {k['rc']}) |",
                  f"| storage after the kill | {counts(k['before'])} |",
                  f"| finished before the kill | {[x['number'] for x in fb]} |",
                  f"| storage after the resume | {counts(k['after'])} |",
                  f"| finished trials kept, unchanged | **{k['kept']} of {len(fb)}** |",
                  f"| resume wall s | {k['resume_wall_s']:.1f} |"]  # fmt: skip
    lines += [
        "",
        f"Bench wall {res['bench_wall_s']:.0f} s; 1-min load average between arms {res['load']['min']:.2f}–{res['load']['max']:.2f} (2 cores).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        sys.exit(worker(sys.argv[2], sys.argv[3]))
    sys.exit(main())
