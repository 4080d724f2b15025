"""Experiment tracking: trackers (MLflow, or a plugin's) told about runs, studies and evaluations.

``tracker`` is the interface a tracker implements (:class:`~tlkit.tracking.tracker.Tracker`,
public as ``tlkit.Tracker``); ``session`` builds a run's trackers from ``--track``, guards every
call and fans the run's events out to them; ``runs`` says what a training run, a study and an
evaluation tell them, and when.  Nothing here imports a tracker's library: the trackers do.
"""
