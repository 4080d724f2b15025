"""Regenerate docs/plugins/hooks.md from the hook-spec docstrings (``make docs``).

tests/test_docs.py fails when the file is out of date.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HEADER = """# Hook reference

<!-- Generated from tlkit/registry/hookspecs.py by docs/plugins/make_hooks_md.py — do not edit by hand. -->

tlkit calls these hooks once per process, when the registry is first used. Implement any of
them in a module registered under the `tlkit` entry-point group, decorated with
`@tlkit.hookimpl`. Spec classes: `tlkit.BaseSpec`, `tlkit.HeadSpec`, `tlkit.AugmentationSpec`,
`tlkit.TrackerSpec` (whose `build` returns a `tlkit.Tracker`);
parameters: `tlkit.Param` in a build function's signature (or `tlkit.param` as its default); bases in one call:
`tlkit.keras_application_base` with a standard preprocessing from `tlkit.bases`
(`CAFFE`, `TF`, `TORCH`, `INTERNAL`).
"""


def render() -> str:
    from tlkit.registry import hookspecs

    parts = [HEADER, "\n", inspect.getdoc(hookspecs) + "\n"]
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if getattr(fn, "tlkit_spec", None) is None:
            continue
        args = ", ".join(inspect.signature(fn).parameters)
        parts.append(f"\n## `{name}({args})`\n\n{inspect.getdoc(fn)}\n")
    return "".join(parts)


if __name__ == "__main__":
    target = Path(__file__).with_name("hooks.md")
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
