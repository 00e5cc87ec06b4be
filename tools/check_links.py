"""Check every link of the rendered site in `docs/`: each relative `href`/`src` must name a file that exists, and each
`#anchor` must name an element id (or `name`) on the page it points to. External links (http, mailto) are not fetched.

Usage: `python tools/check_links.py [DOCS_DIR]`; exits 1 and lists the broken links when there are any. `.ci/run`
runs it after rendering the docs.
"""
from __future__ import annotations
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

ROOT = Path(__file__).resolve().parent.parent


class _Page(HTMLParser):
    "Collects a page's element ids and the links it makes (ignoring the search index's own templates)"
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ('id', 'name'):
            if attrs.get(key): self.ids.add(attrs[key])
        for key in ('href', 'src'):
            if attrs.get(key) is not None and tag != 'base': self.links.append((tag, attrs[key]))


def _parse(path: Path) -> _Page:
    page = _Page(); page.feed(path.read_text(encoding='utf-8', errors='replace')); return page


def broken_links(docs: Path) -> list[str]:
    "Every broken link in the `.html` files under `docs`, as 'page: link (why)'"
    pages = {p.resolve(): _parse(p) for p in sorted(docs.rglob('*.html'))}
    problems = []
    for path, page in pages.items():
        rel = path.relative_to(docs.resolve())
        for tag, link in page.links:
            if not link or urlparse(link).scheme or link.startswith('//'): continue  # external, data:, mailto:
            target, anchor = urldefrag(link)
            target = urlparse(target).path  # drop a query string (`MathJax.js?config=...`)
            if target.startswith('/'):
                problems.append(f"{rel}: {link} (root-absolute path; breaks when the site is served below a base URL)"); continue
            dest = (path.parent / unquote(target)).resolve() if target else path
            if dest.is_dir(): dest = dest / 'index.html'
            if not dest.exists():
                problems.append(f"{rel}: {link} (no file {dest.relative_to(docs.resolve()) if dest.is_relative_to(docs.resolve()) else dest})")
                continue
            if anchor and dest.suffix == '.html':
                ids = pages[dest].ids if dest in pages else _parse(dest).ids
                if unquote(anchor) not in ids: problems.append(f"{rel}: {link} (no element with id {anchor!r} on that page)")
    return problems


if __name__ == '__main__':
    docs = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / 'docs'
    problems = broken_links(docs)
    n_pages = len(list(docs.rglob('*.html')))
    if problems:
        print('\n'.join(problems)); sys.exit(f"{len(problems)} broken link(s) in {n_pages} pages under {docs}")
    print(f"all links resolve in {n_pages} pages under {docs}")
