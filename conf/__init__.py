"""Hydra config tree of focalbench (the top-level conf/ folder, shipped as focalbench.conf)."""
