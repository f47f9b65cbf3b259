"""Regenerate the converter's key table in docs/conversion.md and docs/architecture.md from checkpoints/hub.py's KEY_MAP.

    python scripts/key_table.py          # rewrite the table between the markers of both docs
    python scripts/key_table.py --check  # exit 1 if a doc has drifted (the test suite runs this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from git_scratch.atomic import atomic_write_text
from git_scratch.checkpoints.hub import DROPPED, KEY_MAP, LEGACY_PREFIXES

DOCS = tuple(Path(__file__).resolve().parent.parent / "docs" / name for name in ("conversion.md", "architecture.md"))
BEGIN, END = "<!-- key-table:begin -->", "<!-- key-table:end -->"


def table() -> str:
    rows = ["| Hugging Face key | git_scratch key | how |", "|---|---|---|"]
    for hf, ours in KEY_MAP:
        if isinstance(hf, tuple):
            how = f"{len(hf)} tensors concatenated along dim 0"
            hf_text = "<br>".join(f"`{h}`" for h in hf)
        elif "{f}" in hf:
            how = "one (1, 1, D) per frame, stacked to (F, 1, D)"
            hf_text = f"`{hf}`"
        else:
            how = "as is"
            hf_text = f"`{hf}`"
        rows.append(f"| {hf_text} | `{ours}` | {how} |")
    rows += [f"| `{key}` | — | dropped: an index buffer older transformers saved |" for key in DROPPED]
    rows += [f"| `{old}*` | (read as `{new}*`) | legacy spelling, accepted when loading |"
             for old, new in LEGACY_PREFIXES.items()]
    return "\n".join(rows)


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the docs are current")
    args = parser.parse_args()
    stale = []
    for doc in DOCS:
        text = doc.read_text()
        fresh = render(text)
        if fresh != text and not args.check:
            atomic_write_text(doc, fresh)
        stale += [doc] if fresh != text else []
    if args.check and stale:
        print(f"{', '.join(map(str, stale))} out of date; run python scripts/key_table.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
