"""Which ``tf.distribute`` strategy a run trains under, how big its global batch is, and who writes.

tlkit never schedules work itself: it picks one of TensorFlow's strategies and
builds, compiles and fits inside its scope (see docs/scaling.md):

- ``default``: one device (TensorFlow's default strategy);
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs;
- ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster in
  ``TF_CONFIG`` (or Slurm's environment, through ``SlurmClusterResolver``);
- ``auto``: multi-worker when ``TF_CONFIG`` names a cluster of 2+ tasks, mirrored with 2+
  visible GPUs, else default.

In a multi-worker run only the chief writes the run directory; the other
workers write theirs into a temporary folder that is removed at the end, as
Keras's multi-worker guide prescribes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tlkit.errors import TlkitError

TF_CONFIG = "TF_CONFIG"


@dataclass
class Distribution:
    """A strategy and what the run needs to know about it."""

    strategy: Any
    name: str  # default | mirrored | multi-worker
    replicas: int  # replicas in sync, all workers together
    workers: int
    is_chief: bool  # this process writes the run directory
    task: str  # e.g. "worker 1 of 2" ("" on one machine)
    index: int = 0  # this worker's position among the workers (0..workers-1), chief first

    @property
    def shard(self) -> tuple[int, int]:
        """(this worker, workers): which share of the feature pass this process computes."""
        return self.index, self.workers

    def global_batch(self, batch_size: int, per_replica: bool) -> int:
        """The batch one training step consumes across all replicas."""
        if per_replica:
            return batch_size * self.replicas
        if batch_size % self.replicas:
            raise TlkitError(
                f"--global-batch: --batch-size {batch_size} does not split evenly over {self.replicas} replicas; "
                f"pass a multiple of {self.replicas} or drop --global-batch"
            )
        return batch_size

    def describe(self, batch_size: int, per_replica: bool, lr: float) -> str:
        """One line for the user: strategy, replicas, batch sizes, and the learning rate as given."""
        where = f" ({self.task})" if self.task else ""
        total = self.global_batch(batch_size, per_replica)
        return (
            f"Strategy: {self.name}{where}, {self.replicas} replica(s) in sync; global batch {total} "
            f"({total // self.replicas} per replica); learning rate {lr:g} as given (not rescaled)"
        )


def _tf_config() -> dict[str, Any] | None:
    text = os.environ.get(TF_CONFIG)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TlkitError(f"{TF_CONFIG} is not valid JSON ({exc}); see docs/scaling.md for its form") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict):
        raise TlkitError(f'{TF_CONFIG} needs a "cluster" object and a "task"; see docs/scaling.md')
    return value


def _cluster_size(tf_config: dict[str, Any] | None) -> int:
    if not tf_config:
        return 0
    return sum(len(tasks) for name, tasks in tf_config["cluster"].items() if name in ("chief", "worker"))


def _in_slurm_job() -> bool:
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ


def _resolver():
    """The cluster resolver: TF_CONFIG first, else Slurm's environment."""
    import tensorflow as tf  # lazy: TensorFlow only when training starts; importing this module stays light

    tf_config = _tf_config()
    if tf_config is not None:
        task = tf_config.get("task") or {}
        if task.get("type") not in ("chief", "worker") or not isinstance(task.get("index"), int):
            raise TlkitError(
                f'{TF_CONFIG} must name this process\'s task, e.g. "task": {{"type": "worker", "index": 0}}'
            )
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if _in_slurm_job():
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    raise TlkitError(
        f"--strategy multi-worker needs the cluster: set {TF_CONFIG} in every worker's environment "
        "(or run under Slurm with 2+ tasks); see docs/scaling.md"
    )


def make_distribution(choice: str) -> Distribution:
    """The strategy for ``--strategy choice`` (create it before any other TensorFlow work)."""
    import tensorflow as tf  # lazy: TensorFlow only when training starts; importing this module stays light

    if choice == "auto":
        if _cluster_size(_tf_config()) > 1 or _in_slurm_job():
            choice = "multi-worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            choice = "mirrored"
        else:
            choice = "default"
    if choice == "default":
        return Distribution(tf.distribute.get_strategy(), "default", 1, 1, True, "")
    if choice == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Distribution(strategy, "mirrored", strategy.num_replicas_in_sync, 1, True, "")
    if choice != "multi-worker":
        raise TlkitError(f"unknown --strategy {choice!r}; choose auto, default, mirrored or multi-worker")
    resolver = _resolver()
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    spec = resolver.cluster_spec().as_dict()
    workers = sum(len(spec.get(name, [])) for name in ("chief", "worker"))
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    # The chief writes: the "chief" task, or worker 0 when the cluster has no chief.
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)
    # Position among chief + workers: the chief first, then the workers by index.
    index = 0 if task_type == "chief" else task_id + (1 if "chief" in spec else 0)
    return Distribution(
        strategy,
        "multi-worker",
        strategy.num_replicas_in_sync,
        workers,
        is_chief,
        f"{task_type} {task_id} of {workers} worker(s)" + (", chief" if is_chief else ""),
        index,
    )


def prepare_for_fit(model: Any, distribution: Distribution) -> None:
    """Work around Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).

    Before the first step ``fit`` builds the model from one batch, which it first
    averages across replicas with ``strategy.reduce`` — an eager collective that
    fails for a multi-worker strategy.  Only the batch's shapes and dtypes matter
    there, so this model builds from the first replica's share instead.
    """
    if distribution.name != "multi-worker":
        return
    import tensorflow as tf  # lazy: TensorFlow only when training starts; importing this module stays light

    def build_from_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda x: distribution.strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues)
                    else x,
                    batch,
                )
                break
        with distribution.strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = build_from_local_batch


@contextmanager
def multi_worker_fit_fixes(distribution: Distribution) -> Iterator[None]:
    """While a multi-worker ``fit`` runs, reduce scalar step outputs correctly (keras-team/keras#20585).

    Keras 3 averages each step's outputs (loss, metric results: scalars) across
    workers with ``strategy.reduce("MEAN", v, axis=0)``, which fails for a
    scalar; the mean over replicas is ``axis=None`` there.  Everything else is
    left to Keras's own function.
    """
    if distribution.name != "multi-worker":
        yield
        return
    # lazy: Keras internals and TensorFlow, only for a multi-worker fit
    from keras.src.backend.tensorflow import trainer as trainer_module

    original = trainer_module.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        import tensorflow as tf  # lazy: Keras internals and TensorFlow, only for a multi-worker fit

        def reduce_one(value):
            # With one replica per worker a step's outputs are plain tensors, not PerReplica.
            local = strategy.experimental_local_results(value)[0]
            if reduction in ("auto", "mean") and isinstance(local, tf.Tensor) and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tf.nest.map_structure(reduce_one, values)

    trainer_module.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        trainer_module.reduce_per_replica = original


def lost_workers(exc: BaseException, distribution: Distribution) -> str | None:
    """``"worker 1"`` (``"a worker"`` when unnamed) when ``exc`` is TensorFlow's report that another
    worker of this multi-worker run stopped (killed, pre-empted, unreachable); else None."""
    if distribution.workers < 2 or "tensorflow" not in sys.modules:
        return None
    import tensorflow as tf  # lazy: already loaded (checked above); a multi-worker fit failed

    if not isinstance(exc, tf.errors.UnavailableError):
        return None
    tasks = {int(n) for n in re.findall(r"/job:worker/(?:replica:\d+/)?task:(\d+)", str(exc))}
    others = sorted(tasks - {distribution.index})
    return f"worker {', '.join(map(str, others))}" if others else "a worker"


@contextmanager
def precision_policy_kept() -> Iterator[None]:
    """Leave Keras's global dtype policy as it was (a run sets ``--precision``'s).

    Keras is not imported here when it is not loaded yet: importing it (and TensorFlow) before
    the data scan would delay every early refusal by seconds.
    """
    keras = sys.modules.get("keras")
    policy = keras.mixed_precision.global_policy().name if keras is not None else "float32"
    try:
        yield
    finally:
        keras = sys.modules.get("keras")
        if keras is not None:
            keras.mixed_precision.set_global_policy(policy)


def set_precision(policy: str) -> None:
    """Make ``policy`` (float32, mixed_float16, mixed_bfloat16) Keras's global dtype policy."""
    import keras  # lazy: TensorFlow only when training starts; importing this module stays light

    keras.mixed_precision.set_global_policy(policy)


__all__ = [
    "Distribution",
    "lost_workers",
    "make_distribution",
    "multi_worker_fit_fixes",
    "prepare_for_fit",
    "set_precision",
]
