"""amm_cli."""
