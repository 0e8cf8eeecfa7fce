"""The sweep spec file, its trial configs and what a sweep will cost: plain data, no Ray or
MLflow."""
