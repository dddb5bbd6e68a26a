"""Write (or check) the man pages and bash completions under share/ from the parsers.

    python -m pylvs.doc.generate            # make man: rewrite share/man/man8 and share/bash-completion
    python -m pylvs.doc.generate --check    # exit 1 and name the files that differ from the parsers

The files are installed with the package (pyproject's data-files: <prefix>/share/man/man8 and
<prefix>/share/bash-completion/completions, where man and bash-completion look under /usr/local).
"""

from __future__ import annotations

import argparse
import os
import sys

from pylvs.doc import completion, man, model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN_DIR = os.path.join("share", "man", "man8")
COMPLETION_DIR = os.path.join("share", "bash-completion", "completions")


def files() -> dict[str, str]:
    """Relative path -> content, for every program."""
    out: dict[str, str] = {}
    for program in model.programs():
        out[os.path.join(MAN_DIR, f"{program.name}.8")] = man.render(program)
        out[os.path.join(COMPLETION_DIR, program.name)] = completion.render(program)
    return out


def stale(root: str = ROOT) -> list[str]:
    """The files under `root` that are missing or differ from what the parsers give."""
    found = []
    for path, text in files().items():
        try:
            with open(os.path.join(root, path)) as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        found.append(path)
    return found


def write(root: str = ROOT) -> list[str]:
    changed = stale(root)
    for path, text in files().items():
        if path in changed:
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as f:
                f.write(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pylvs.doc.generate", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only say which files differ from the parsers")
    p.add_argument("--root", default=ROOT, help="the source tree (default: this one)")
    args = p.parse_args(argv)
    if args.check:
        differ = stale(args.root)
        for path in differ:
            print(f"{path}: differs from the parsers (run: make man)", file=sys.stderr)
        return 1 if differ else 0
    for path in write(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
