"""The model and its losses: architectures as data, networks, priors, the AMM, the loss phases."""
