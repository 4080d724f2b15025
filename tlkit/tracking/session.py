"""The trackers of one run: built from ``--track``, every call guarded, events fanned out.

:class:`TrackingSession` is the one place that calls trackers.  A tracker that raises is told
nothing more for the rest of the run; the user sees one warning line (through the run's
observer) naming the tracker and the reason, and :attr:`TrackingSession.statuses` — written into
``metrics.json`` as ``trackers`` — says ``{"status": "failed", "error": ..., "during": ...}``
instead of ``{"status": "ok", ...}``.  Only ``KeyboardInterrupt`` (Ctrl-C, SIGTERM) gets through:
stopping is the user's call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from tlkit.errors import TlkitError, one_line
from tlkit.io.urls import mask_password
from tlkit.observer import TrainingObserver
from tlkit.registry.manager import get_registry
from tlkit.tracking.tracker import TrackedRun, Tracker


class TrackingSession:
    """The trackers a run reports to, and how each of them is doing.

    Make one with :meth:`open`; use :attr:`observer` as the run's observer (it forwards every event
    to the run's own observer, then, once :meth:`start` was called, to each tracker), and report
    the run's milestones with :meth:`start`, :meth:`call` and :meth:`end`.
    """

    def __init__(self, trackers: Mapping[str, Tracker], observer: TrainingObserver, *, doing: str = "training") -> None:
        self._trackers: dict[str, Tracker] = dict(trackers)
        self._inner = observer
        self._doing = doing
        #: Per tracker: ``{"status": "ok", "seconds": ..., **state}`` or ``{"status": "failed", "error": ..., "during": ...}``.
        self.statuses: dict[str, dict[str, Any]] = {name: {"status": "ok", "seconds": 0.0} for name in trackers}
        self.started = False
        self.ended = False
        #: The run's observer, with the trackers behind it (the run's own when nothing is tracked).
        self.observer: TrainingObserver = _FanOut(observer, self) if trackers else observer

    @classmethod
    def open(
        cls,
        names: Iterable[str],
        *,
        uri: str = "",
        register_model: str = "",
        observer: TrainingObserver | None = None,
        doing: str = "training",
    ) -> TrackingSession:
        """Build the trackers ``names`` (``--track``): a name that is not registered, or whose library
        is missing, is a TlkitError (nothing has started); a ``build`` that raises anything else is a
        failed tracker (a warning; the rest goes on)."""
        observer = observer or TrainingObserver()
        registry = get_registry()
        specs = [registry.tracker(name) for name in dict.fromkeys(names)]
        for spec in specs:
            spec.check_available()
        session = cls({}, observer, doing=doing)
        for spec in specs:
            session.statuses[spec.name] = {"status": "ok", "seconds": 0.0}
            started = time.perf_counter()
            try:
                tracker = spec.build(uri=uri, register_model=register_model)
                if not isinstance(tracker, Tracker):
                    raise TypeError(f"its build returned {type(tracker).__name__}, not a tlkit.Tracker")
            except TlkitError:
                raise
            except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
                session._fail(spec.name, "build", exc)
                continue
            finally:
                session._add_time(spec.name, started)
            tracker.name = spec.name
            session._trackers[spec.name] = tracker
        if session._trackers:
            session.observer = _FanOut(observer, session)
        return session

    # -- state ---------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """True when the run asked for any tracker (even one that failed since)."""
        return bool(self.statuses)

    @property
    def active(self) -> dict[str, Tracker]:
        """The trackers still being called, by name."""
        return dict(self._trackers)

    def disable(self) -> None:
        """Call no tracker at all (a multi-worker run's other workers: only the chief tracks)."""
        self._trackers.clear()
        self.statuses.clear()

    # -- calls ---------------------------------------------------------------
    def call(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``tracker.method(*args, **kwargs)`` on every active tracker, guarded; the results by name."""
        results = {}
        for name, tracker in list(self._trackers.items()):
            results[name] = self.call_one(name, tracker, method, *args, **kwargs)
        return results

    def call_one(self, name: str, tracker: Tracker, method: str, *args: Any, **kwargs: Any) -> Any:
        """One guarded call: an exception switches the tracker off (None is returned)."""
        if name not in self._trackers:
            return None
        started = time.perf_counter()
        try:
            return getattr(tracker, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
            self._fail(name, method, exc)
            return None
        finally:
            self._add_time(name, started)

    def start(
        self,
        run: TrackedRun,
        saved: Mapping[str, Mapping[str, Any]] | None = None,
        save: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    ) -> None:
        """Tell every tracker the run started; each one's returned state is kept with ``save``
        (``{tracker: state}``, merged over ``saved``) and handed back as ``run.state`` next time."""
        before: dict[str, dict[str, Any]] = {name: dict(state) for name, state in (saved or {}).items()}
        states = dict(before)
        self.started = True
        for name, tracker in list(self._trackers.items()):
            mine = replace(run, state=dict(before.get(name, {})), say=self._inner.message)
            state = self.call_one(name, tracker, "run_started", mine)
            if name in self._trackers and state:
                states[name] = {str(k): v for k, v in dict(state).items()}
                self.statuses[name].update(states[name])
        if save is not None and states and states != before:
            save(states)

    def end(self, status: str, metrics: Mapping[str, Any] | None = None) -> None:
        """Tell every tracker the run ended (once; nothing when the run never started)."""
        if self.started and not self.ended:
            self.ended = True
            self.call("run_ended", status, dict(metrics or {}))

    # -- failures ------------------------------------------------------------
    def _fail(self, name: str, method: str, exc: BaseException) -> None:
        reason = mask_password(one_line(exc))  # a URI with a password in an error is shown masked
        self._trackers.pop(name, None)
        seconds = self.statuses.get(name, {}).get("seconds", 0.0)
        self.statuses[name] = {"status": "failed", "error": reason, "during": method, "seconds": seconds}
        self._inner.message(
            f"tracker {name!r} failed in {method} ({reason}); {self._doing} goes on without it", level="warning"
        )

    def _add_time(self, name: str, started: float) -> None:
        status = self.statuses.get(name)
        if status is not None:
            status["seconds"] = round(status.get("seconds", 0.0) + time.perf_counter() - started, 3)


class _FanOut(TrainingObserver):
    """The run's observer first, then (once the run started) every active tracker, guarded."""

    def __init__(self, inner: TrainingObserver, session: TrackingSession) -> None:
        self._inner = inner
        self._session = session

    def _both(self, method: str, *args: Any) -> None:
        if method == "epoch_ended":
            # Trackers first: the epoch is already checkpointed, so it must be recorded even when the
            # run's own observer stops the run here (a KeyboardInterrupt in a notebook's observer).
            self._to_trackers(method, *args)
            getattr(self._inner, method)(*args)
            return
        getattr(self._inner, method)(*args)
        self._to_trackers(method, *args)

    def _to_trackers(self, method: str, *args: Any) -> None:
        if self._session.started and not self._session.ended:
            self._session.call(method, *args)

    def message(self, text: str, level: str = "info") -> None:
        self._both("message", text, level)

    def task_started(self, task: str, total: int) -> None:
        self._both("task_started", task, total)

    def task_advanced(self, task: str, done: int) -> None:
        self._both("task_advanced", task, done)

    def task_finished(self, task: str) -> None:
        self._both("task_finished", task)

    def stage_started(self, stage: str, first_epoch: int, last_epoch: int, steps: int) -> None:
        self._both("stage_started", stage, first_epoch, last_epoch, steps)

    def epoch_started(self, stage: str, epoch: int, last_epoch: int) -> None:
        self._both("epoch_started", stage, epoch, last_epoch)

    def batch_ended(self, step: int, logs: Mapping[str, float]) -> None:
        self._both("batch_ended", step, logs)

    def validation_started(self) -> None:
        self._both("validation_started")

    def epoch_ended(self, stage: str, epoch: int, last_epoch: int, logs: Mapping[str, float]) -> None:
        self._both("epoch_ended", stage, epoch, last_epoch, logs)

    def stage_finished(self, stage: str) -> None:
        self._both("stage_finished", stage)

    def trial_finished(self, trial: Any, best: Any) -> None:
        self._both("trial_finished", trial, best)


__all__ = ["TrackingSession"]
