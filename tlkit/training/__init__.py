"""One training run: its steps, stages, checkpoints, history, optimizers, tf.distribute, the learning-rate finder."""
