"""The driver of a sweep: Ray Tune set up and run, the trainable its workers import, the
Tune callbacks (MLflow writer, console) and how it stops."""
