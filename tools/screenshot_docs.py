"""Screenshots of the rendered site, to look at what a reader sees (headless Chromium through Playwright).

    python tools/screenshot_docs.py                          # index, flowify_linear, surjections, the CNN tutorial
    python tools/screenshot_docs.py core train --out shots   # any pages, into any folder

Needs Playwright's Python package (`pip install playwright`; its browsers are not needed) and a Chromium: Debian's
`/usr/bin/chromium` by default, `--chromium PATH` otherwise. The site is served from `docs/` on a local port, so links,
styles and the offline MathJax load as they do on the web. Each page is shot at the top (the first screen) and whole
(`NAME-full.png`); the script also reports, per page, what a reader should never see: raw TeX left unrendered by
MathJax, literal backticks in the navigation, code blocks or tables wider than the content column that do not scroll,
and display maths that is wider than the column (it scrolls, but a reader sees it cut).
Not run by CI (it needs a browser); the screenshots are looked at, not compared.
"""
import argparse, contextlib, functools, http.server, threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ['index', 'flowify_linear', 'surjections', 'flowify_a_cnn']

PROBLEMS = """() => {
  const main = document.querySelector('.md-content') || document.body;
  const width = main.getBoundingClientRect().width;
  const text = main.innerText;
  const raw_tex = (text.match(/\\\\(times|frac|mathbb|mathrm|log)\\b|\\$\\$/g) || []).length;
  const nav_ticks = [...document.querySelectorAll('.md-nav__link')].filter(a => a.textContent.includes('`')).length;
  const wide = [...main.querySelectorAll('pre, .MathJax_Display, table')]
      .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible').length;
  const clipped_maths = [...main.querySelectorAll('.MathJax_Display')].filter(e => e.scrollWidth > e.clientWidth + 1)
      .map(e => (e.nextElementSibling || e).textContent.slice(0, 60));
  return {raw_tex, nav_ticks, overflowing_unscrollable: wide, clipped_maths, content_width: Math.round(width)};
}"""


MATHS_STATE = """() => {
  const scripts = [...document.querySelectorAll('script[type^="math/tex"]')];
  const done = scripts.filter(s => s.previousSibling && /^MathJax(_Display|_CHTML)?$/.test(s.previousSibling.className || '')).length;
  return [scripts.length, done, document.querySelectorAll('.MathJax_Processing, .MathJax_Processed').length].join(',');
}"""


def settle_maths(page, timeout_s: float = 60, poll_ms: int = 500):
    "Wait until MathJax has typeset every formula and the count has stopped changing (it typesets in chunks, display maths first)"
    if page.evaluate("() => !!document.querySelector('script[src*=\"MathJax\"]')"):
        page.wait_for_function("() => window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0", timeout=timeout_s * 1000)
    last, steady = None, 0
    for poll in range(int(timeout_s * 1000 / poll_ms)):
        state = page.evaluate(MATHS_STATE)
        total, done, _pending = map(int, state.split(','))
        steady = steady + 1 if state == last and done == total else 0
        if steady >= 3 and (total or poll * poll_ms >= 8000): return   # no formula found yet: MathJax may not have scanned the page
        last = state; page.wait_for_timeout(poll_ms)
    print(f'  MathJax had not settled after {timeout_s:.0f} s: {last} (formulas, typeset, pending)')


@contextlib.contextmanager
def serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try: yield f'http://127.0.0.1:{server.server_port}'
    finally: server.shutdown()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('pages', nargs='*', default=PAGES)
    p.add_argument('--out', default='/tmp/flownb-shots', help='folder for the PNG files (default /tmp/flownb-shots)')
    p.add_argument('--chromium', default='/usr/bin/chromium')
    p.add_argument('--width', type=int, default=1280)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    flags = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
             '--disable-component-update', '--disable-sync']
    with serve(ROOT / 'docs') as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=flags)
        for name in args.pages:   # a fresh page each: MathJax typesets a page reached by navigating from another one late, or not at all
            page = browser.new_page(viewport={'width': args.width, 'height': 900})
            page.goto(f'{url}/{name}.html', wait_until='networkidle')
            settle_maths(page)
            print('  maths (formulas, typeset, pending):', page.evaluate(MATHS_STATE))
            page.screenshot(path=str(out / f'{name}.png'))
            page.screenshot(path=str(out / f'{name}-full.png'), full_page=True)
            print(name, page.evaluate(PROBLEMS))
            page.close()
        browser.close()
    print(f'wrote {len(args.pages) * 2} screenshots to {out}')


if __name__ == '__main__': main()
