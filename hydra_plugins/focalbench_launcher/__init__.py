"""focalbench's GPU-pool launcher for Hydra (`hydra/launcher=gpu_pool`). Hydra finds launchers only
in the `hydra_plugins` namespace package, which therefore has no __init__.py of its own."""
