"""The `git-scratch` command line: a table of commands (__main__.py), one module per command.

`python -m git_scratch.cli` and the `git-scratch` script both run `main`.
"""


def main(argv: list[str] | None = None) -> int:
    """`git-scratch` with these arguments (sys.argv[1:] by default); returns the exit code."""
    from .__main__ import main  # lazy: `python -m git_scratch.cli` runs __main__ itself, once

    return main(argv)
