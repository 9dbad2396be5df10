"""The benchmark runner (run from the repository root, medseg installed):

    python -m benchmarks list                        the suites and what each measures
    python -m benchmarks run NAME [--quick] [...]    run one suite; `run NAME --help` for its options
    python -m benchmarks table                       regenerate BENCHMARKS.md from benchmarks/results/

A full run writes benchmarks/results/NAME.json (one envelope, `benchmarks.harness`), replacing the
rows it measured and keeping the others. `--quick` is a smoke run of seconds to a minute: small
inputs, few steps; its figures mean nothing, so it writes to a temporary file (or `--out`),
never over the recorded results.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import DEFAULT_DATA, RESULTS, envelope, result_path, save
from benchmarks.suites import SUITES, load


def list_suites() -> str:
    width = max(map(len, SUITES))
    return "\n".join(f"{name:<{width}}  {line}" for name, line in SUITES.items())


def run_suite(name: str, argv: list[str]) -> Path:
    suite = load(name)
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks run {name}", description=suite.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds to a minute, figures not recorded")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder holding the real datasets (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, help=f"result file (default {RESULTS}/{name}.json; --quick: a temporary file)")
    suite.add_arguments(parser)
    args = parser.parse_args(argv)
    settings, results = suite.run(args)
    env = envelope(name, {**settings, "quick": args.quick}, results)
    if args.out:
        out = args.out
    elif args.quick:
        out = Path(tempfile.gettempdir()) / "medseg-benchmarks" / f"{name}.quick.json"
        out.unlink(missing_ok=True)  # a smoke run starts from nothing: no rows merged from an earlier one
    else:
        out = result_path(name)
    save(env, out)
    print("\n".join(suite.table(json.loads(out.read_text()))))
    print(f"\nwrote {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("list", "run", "table"))
    parser.add_argument("name", nargs="?", help="the suite to run (run)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="(table) folder of result files")
    parser.add_argument("--output", type=Path, help="(table) file to write (default BENCHMARKS.md; '-': stdout)")
    if argv[:1] == ["run"]:
        if len(argv) < 2 or argv[1].startswith("-"):
            parser.error(f"run needs a suite name: {', '.join(SUITES)}")
        run_suite(argv[1], argv[2:])
        return 0
    args = parser.parse_args(argv)
    if args.command == "list":
        print(list_suites())
    elif args.command == "table":
        from benchmarks.table import BENCHMARKS_MD, render

        text = render(args.results)
        if str(args.output) == "-":
            sys.stdout.write(text)
        else:
            target = args.output or BENCHMARKS_MD
            target.write_text(text)
            print(f"wrote {target}")
    else:
        parser.error("run needs a suite name")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
