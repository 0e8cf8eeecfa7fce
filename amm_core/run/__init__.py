"""One training run: the loop, the step, checkpoints, evaluation, figures, speed levers."""
