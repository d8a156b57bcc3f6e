"""The process helpers now live in the package (`registry.devnet.procs`), which `proofreg devnet` uses too."""

from registry.devnet.procs import HOST, free_port, log_tail, pdeathsig_kill, stop_group, track, untrack

__all__ = ["HOST", "free_port", "log_tail", "pdeathsig_kill", "stop_group", "track", "untrack"]
