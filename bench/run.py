"""
Run the benchmarks and print every figure as one JSON line:
{"name", "value", "unit"} plus "baseline" and "ratio" where a figure is compared with something.

    python bench/run.py                 # all of them
    python bench/run.py prepare sample  # bench/bench_prepare.py and bench/bench_sample.py only
    python bench/run.py speedrun --budget_s=60   # options after the names go to every script

Each bench/bench_<name>.py (and bench/speedrun.py) also runs on its own; see its docstring.
"""
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {p.stem.removeprefix('bench_'): p for p in sorted(HERE.glob('bench_*.py'))}
SCRIPTS['speedrun'] = HERE / 'speedrun.py'


def figure(name, value, unit, **extra):
    """Print one figure as the JSON line every benchmark writes (the scripts import this)."""
    print(json.dumps({'name': name, 'value': value, 'unit': unit, **extra}), flush=True)


def main(argv):
    names = [a for a in argv if not a.startswith('--')] or list(SCRIPTS)
    options = [a for a in argv if a.startswith('--')]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"error: unknown benchmark {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}", file=sys.stderr)
        return 2
    failed = [n for n in names if subprocess.run([sys.executable, str(SCRIPTS[n]), *options]).returncode != 0]
    if failed:
        print(f"error: benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
