"""The `proofreg` command line: `registry.cli.common` (what every command shares), `registry.cli.main` (the
commands) and `registry.cli.zk` (`proofreg zk ...`). Nothing outside this package imports a command module
except through these names, and nothing here is imported by the protocol core."""

from registry.cli.common import CliError, emit, fail, handle_errors
from registry.cli.main import main

__all__ = ["CliError", "emit", "fail", "handle_errors", "main"]
