"""The command line: `vmmtui GUEST` opens the TUI; subcommands do headless work."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vmmtui` console script."""
    parser = argparse.ArgumentParser(prog="vmmtui", description=__doc__)
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
