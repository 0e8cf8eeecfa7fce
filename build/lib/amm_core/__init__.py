"""amm_core."""
