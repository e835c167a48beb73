"""Run every block of README.md as written, in order, in a fresh clone; fail on drift.

Each fenced block in README.md is preceded by a marker comment saying how CI treats it:

    <!-- ci: run -->       shell lines, run in order with bash -e
    <!-- ci: tour -->      `$ command` lines, each followed by the output the command prints
                           (stdout); the output must match what the current code prints
    <!-- ci: python -->    a Python block, run with python
    <!-- ci: skip REASON --> not run here; the reason says where it is proved instead

A block without a marker is an error, so nothing in the README escapes the check. The
blocks run as a new user would run them: in a clone of this repository (its committed
HEAD), with ../shared beside it when the repository has one, in a new virtual
environment that only the README's own commands install into.

    python .ci/readme.py            # check (CI)
    python .ci/readme.py --update   # rewrite the tour's outputs from a fresh run
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- ci: (run|tour|python|skip)\b\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```")


def parse_blocks(lines: list[str]) -> list[dict]:
    """Fenced blocks with their marker: {"mode", "reason", "start", "end"} (line indices
    of the first and last content lines, end exclusive)."""
    blocks, i = [], 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and not FENCE.match(lines[end]):
            end += 1
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(previous.strip())
        if not marker:
            sys.exit(f"README.md:{i + 1}: fenced block without a '<!-- ci: run|tour|python|skip -->' marker")
        blocks.append({"mode": marker.group(1), "reason": marker.group(2), "start": start, "end": end})
        i = end + 1
    return blocks


def run(command: str, cwd: Path, env: dict, shell: str = "bash") -> subprocess.CompletedProcess:
    args = [shell, "-e", "-c", command] if shell == "bash" else ["python", "-c", command]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def tour_commands(lines: list[str]) -> list[tuple[int, str, list[str]]]:
    """(line index, command, expected output lines) for each `$ command` of a tour block."""
    out = []
    for offset, line in enumerate(lines):
        if line.startswith("$ "):
            out.append((offset, line[2:], []))
        elif out:
            out[-1][2].append(line)
    for _, _, expected in out:
        while expected and not expected[-1].strip():
            expected.pop()
    return out


def check_tour(lines: list[str], block: dict, cwd: Path, env: dict, update: bool) -> tuple[list[str], int]:
    """Run a tour block; returns its lines (updated when asked) and the number of drifts."""
    body = lines[block["start"]:block["end"]]
    new_body, drifts = [], 0
    for _, command, expected in tour_commands(body):
        result = run(command, cwd, env)
        if result.returncode != 0:
            sys.exit(f"README tour: `{command}` failed ({result.returncode}):\n{result.stderr}")
        actual = result.stdout.rstrip("\n").split("\n") if result.stdout.strip() else []
        if actual != expected:
            drifts += 1
            print(f"README tour drifted at `{command}`:\n  README:  {expected}\n  printed: {actual}",
                  file=sys.stderr)
        if new_body:
            new_body.append("")
        new_body += [f"$ {command}", *actual]
    return new_body, drifts


def fresh_clone(scratch: Path) -> Path:
    clone = scratch / REPO.name
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (scratch / "shared").symlink_to(shared)
    return clone


def fresh_environment(scratch: Path) -> dict:
    """Environment variables of a new virtual environment (activated, as a user would)."""
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RNNKIT_MODEL", "PYTHONPATH", "VIRTUAL_ENV")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite the tour's outputs in README.md")
    args = parser.parse_args()
    readme = REPO / "README.md"
    lines = readme.read_text(encoding="utf-8").split("\n")
    blocks = parse_blocks(lines)
    drifts = 0
    with tempfile.TemporaryDirectory() as scratch:
        cwd = fresh_clone(Path(scratch))
        env = fresh_environment(Path(scratch))
        for block in blocks:
            text = "\n".join(lines[block["start"]:block["end"]])
            where = f"README.md:{block['start']}"
            if block["mode"] == "skip":
                print(f"{where}: skipped ({block['reason']})")
                continue
            print(f"{where}: {block['mode']}", flush=True)
            if block["mode"] == "tour":
                new_body, block_drifts = check_tour(lines, block, cwd, env, args.update)
                drifts += block_drifts
                block["new_body"] = new_body
                continue
            result = run(text, cwd, env, "bash" if block["mode"] == "run" else "python")
            if result.returncode != 0:
                sys.exit(f"{where}: the {block['mode']} block failed ({result.returncode}):\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if args.update:
        for block in reversed(blocks):
            if "new_body" in block:
                lines[block["start"]:block["end"]] = block["new_body"]
        readme.write_text("\n".join(lines), encoding="utf-8")
        print(f"README.md updated ({drifts} drifted outputs rewritten)")
    elif drifts:
        sys.exit(f"README.md: {drifts} tour outputs differ from what the code prints; "
                 "run `python .ci/readme.py --update` and commit")
    print("README blocks: all ran" + ("" if args.update else ", tour matches"))


if __name__ == "__main__":
    main()
