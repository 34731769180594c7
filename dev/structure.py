"""
How the code reads, in numbers: lines per file, its longest function and its largest argument count,
the share of lines over a width, and the imports inside functions. Run it before and after a change
to the layout (the closing note of a structure step quotes both).

    python dev/structure.py                 # this checkout
    python dev/structure.py --width=100     # the share of lines wider than 100 characters
"""
import ast
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_files(root):
    """The project's code: every .py file but the tests and the virtual environment."""
    paths = glob.glob(os.path.join(root, '*.py')) + glob.glob(os.path.join(root, '*', '*.py')) + \
        glob.glob(os.path.join(root, 'data', '*', '*.py'))
    return sorted(p for p in paths if os.sep + 'tests' + os.sep not in p and os.sep + '.venv' not in p)


def arguments(function):
    """Its parameters, self and cls apart."""
    names = [a.arg for a in function.args.posonlyargs + function.args.args + function.args.kwonlyargs]
    return len([n for n in names if n not in ('self', 'cls')])


def measure(path, width):
    """(lines, (longest function, its lines), (function with most parameters, their count), lines over width,
    imports inside functions) of one file."""
    with open(path, encoding='utf-8') as f:
        source = f.read()
    functions = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    longest = max(((n.name, n.end_lineno - n.lineno + 1) for n in functions), key=lambda x: x[1], default=('-', 0))
    widest = max(((n.name, arguments(n)) for n in functions), key=lambda x: x[1], default=('-', 0))
    inner = sum(isinstance(m, (ast.Import, ast.ImportFrom)) for n in functions for m in ast.walk(n))
    lines = source.splitlines()
    return len(lines), longest, widest, sum(len(line) > width for line in lines), inner


def main(argv):
    width = int(next((a.split('=', 1)[1] for a in argv if a.startswith('--width=')), 100))
    rows = [(os.path.relpath(p, ROOT), *measure(p, width)) for p in python_files(ROOT)]
    print(f"{'file':34} {'lines':>6}  {'longest function':40} {'most parameters':34} {'>' + str(width):>6} "
          f"{'inner imports':>13}")
    for name, lines, (fn, fn_lines), (wide, args), over, inner in rows:
        print(f'{name:34} {lines:6}  {fn + f" ({fn_lines})":40} {wide + f" ({args})":34} {over:6} {inner:13}')
    total = sum(r[1] for r in rows)
    longest = max(rows, key=lambda r: r[2][1])
    widest = max(rows, key=lambda r: r[3][1])
    print(
        f"\n{len(rows)} files, {total:,} lines; longest function {longest[2][0]} ({longest[2][1]} lines, "
        f"{longest[0]}); "
        f"most parameters {widest[3][0]} ({widest[3][1]}, {widest[0]}); {sum(r[4] for r in rows) / total:.1%} of lines "
        "over "
        f"{width} characters; {sum(r[5] for r in rows)} imports inside functions")


if __name__ == '__main__':
    main(sys.argv[1:])
