"""Check that the README's benchmark tables are the ones the benchmark scripts generate from `bench/results/`.

    python tools/check_tables.py     # exit 1, naming the table, when README.md holds a table that differs

Numbers are measured once, written to JSON by the script that measured them, and rendered into markdown by that
script; README.md (generated from nbs/index.ipynb) must hold those tables verbatim, so a table is never re-typed by
hand. The generators: `bench/run.py` (bench/results/run_TABLE.md), `bench/reproduce.py --table`,
`bench/paper.py --table`, `bench/sampling.py` (sampling_TABLE.md) and `bench/compile_cost.py` (compile_cost_TABLE.md). Run in `.ci/run`; it reads JSON only and trains nothing.
"""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def markdown_tables(text: str) -> list[str]:
    "Every block of consecutive `|` lines"
    tables, block = [], []
    for line in text.splitlines() + ['']:
        if line.startswith('|'): block.append(line)
        elif block: tables.append('\n'.join(block)); block = []
    return tables


def generated() -> dict[str, list[str]]:
    def script(*args):
        out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return markdown_tables(out)
    return {'bench/results/run_TABLE.md (bench/run.py)': markdown_tables((ROOT / 'bench/results/run_TABLE.md').read_text()),
            'bench/reproduce.py --table': script('bench/reproduce.py', '--table'),
            'bench/paper.py --table': script('bench/paper.py', '--table'),
            'bench/results/sampling_TABLE.md (bench/sampling.py)': markdown_tables((ROOT / 'bench/results/sampling_TABLE.md').read_text()),
            'bench/results/compile_cost_TABLE.md (bench/compile_cost.py)': markdown_tables((ROOT / 'bench/results/compile_cost_TABLE.md').read_text())}


def main() -> int:
    readme = (ROOT / 'README.md').read_text()
    ours = markdown_tables(readme)
    bad, sources = 0, generated()
    for source, tables in sources.items():
        for table in tables:
            if table in ours: continue
            header = table.splitlines()[0]
            stale = [t for t in ours if t.splitlines()[0] == header]
            bad += 1
            print(f"README.md: the table of {source} starting {header[:70]!r} is "
                  f"{'different there (re-typed or stale)' if stale else 'missing'}; paste the generated table into nbs/index.ipynb")
    print(f"{sum(map(len, sources.values()))} generated tables checked against README.md: {'all there' if not bad else f'{bad} not'}")
    return 1 if bad else 0


if __name__ == '__main__': sys.exit(main())
