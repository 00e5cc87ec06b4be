"""How the notebooks read: the length of each exported cell, and whether a test follows it closely.

    python tools/cell_stats.py            # a table per notebook
    python tools/cell_stats.py --check    # exit 1 when a cell breaks the house rules below (run in .ci/run)

The house rules (STYLE.md): one idea per exported cell, at most MAX_LINES lines (a class grows method by method with
fastcore's `@patch` rather than in one cell), and a test within TEST_WITHIN cells after every exported cell that defines
something (a code cell that calls `test_*`, `check_*` or asserts). Import-only cells need no test. And a cell that draws
a figure (`plt.subplots`, `plt.figure`, `plt.show`) is committed with its picture: a notebook executed with a
non-interactive backend (MPLBACKEND=Agg) keeps no image outputs, and the docs would lose every plot.
"""
import argparse, json, re, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES, TEST_WITHIN = 60, 2
FIGURE = re.compile(r'plt\.(subplots|figure|show)\(')
TEST = re.compile(r'^\s*(test_\w+\(|check_\w+\(|assert\b)|\btest_(eq|close|fail|ne|is|shuffled)\(', re.M)


def cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']


def source(cell: dict) -> str: return ''.join(cell['source'])


def exported(cell: dict) -> bool: return bool(re.match(r'\s*#\|\s*export', source(cell)))


def defines(cell: dict) -> bool:
    "An exported cell with more than imports in it"
    body = [l for l in source(cell).splitlines() if l.strip() and not l.lstrip().startswith(('#', 'from ', 'import '))]
    return bool(body) and not all(l.startswith((' ', ')')) for l in body)


def tested(cs: list[dict], i: int) -> bool:
    return any(TEST.search(source(c)) for c in cs[i + 1:i + 1 + TEST_WITHIN] + [cs[i]] if not exported(c) or c is cs[i])


def pictureless(cs: list[dict]) -> list[int]:
    "Code cells that draw a figure but hold no image output"
    return [i for i, c in enumerate(cs) if not exported(c) and FIGURE.search(source(c))
            and not any('image/png' in o.get('data', {}) for o in c.get('outputs', []))]


def stats(path: Path) -> dict:
    cs = cells(path)
    rows = [(i, len(source(c).splitlines()) - 1) for i, c in enumerate(cs) if exported(c) and defines(c)]
    return {'notebook': path.name, 'cells': len(rows), 'lines': [n for _, n in rows],
            'long': [(i, n) for i, n in rows if n > MAX_LINES],
            'untested': [i for i, _ in rows if not tested(cs, i)], 'pictureless': pictureless(cs)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='exit 1 if an exported cell is too long or has no test near it')
    args = p.parse_args(argv)
    bad = 0
    print(f"{'notebook':<26} {'exported':>8} {'mean':>6} {'median':>6} {'max':>5}  over {MAX_LINES} lines / no test within {TEST_WITHIN} cells")
    for path in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        s = stats(path)
        if s['pictureless']: print(f"{s['notebook']}: code cell(s) {s['pictureless']} draw a figure but hold no picture; execute the notebook without MPLBACKEND=Agg")
        bad += len(s['pictureless'])
        if not s['cells']: continue
        print(f"{s['notebook']:<26} {s['cells']:>8} {statistics.mean(s['lines']):>6.1f} {statistics.median(s['lines']):>6.0f} "
              f"{max(s['lines']):>5}  {s['long'] or '-'} / {s['untested'] or '-'}")
        bad += len(s['long']) + len(s['untested'])
    if args.check and bad:
        print(f"{bad} cell(s) break the house rules (code cell index, lines)"); return 1
    return 0


if __name__ == '__main__': sys.exit(main())
