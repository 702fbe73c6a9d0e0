"""Running the `emotion-ai` command line in process."""

from __future__ import annotations

from emotion_ai import cli as cli_mod


def run_cli(argv: list[str]) -> int:
    """`emotion_ai.cli.main(argv)`'s exit status, whether it returns it or argparse exits."""
    try:
        return cli_mod.main(argv)
    except SystemExit as exc:
        return int(exc.code)
