"""Render flownb's documentation site into `docs/` and README.md from `nbs/index.ipynb`, without Quarto.

    python tools/render_docs.py            # docs/ and README.md
    python tools/render_docs.py --check    # also fail if README.md was out of date

Steps: nbdev's own notebook processing (`proc_nbs`, the same pre-processing `nbdev_docs` runs before Quarto: directives,
`show_doc` entries for every exported name, doc links) into `_proc/`; a light translation of the Quarto-specific parts
(front matter, `#| echo: false` cells, `{target=...}` attributes) into plain notebooks; then `mkdocs build` with
mkdocs-material and mkdocs-jupyter (outputs as committed, no execution). MathJax is served from the site itself (copied
from the `jupyter-server-mathjax` package), so math renders offline. Users with Quarto can use `nbdev_docs` instead.
"""
import argparse, html, re, shutil, subprocess, sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / '_mkdocs'   # mkdocs docs_dir (generated, git-ignored)
SITE = ROOT / 'docs'

# The parts of MathJax 2.7 the pages load: the combined TeX/MathML config, its output fonts, and the extensions it pulls in.
MATHJAX_FILES = ['MathJax.js', 'config/TeX-AMS-MML_HTMLorMML-full.js', 'config/Safe.js', 'jax/element', 'jax/input/TeX',
                 'jax/output/HTML-CSS', 'extensions/TeX', 'extensions/HTML-CSS', 'extensions/MathEvents.js',
                 'extensions/MathMenu.js', 'extensions/MathZoom.js', 'extensions/tex2jax.js', 'extensions/Safe.js',
                 'extensions/AssistiveMML.js', 'extensions/toMathML.js', 'fonts/HTML-CSS/STIX-Web/woff', 'LICENSE']
# The package ships STIX-Web web fonts only, so the copied config is pointed at them (MathJax's default asks for its
# TeX fonts, which would fall back to whatever the reader's system has).
FONT_SETTINGS = {'availableFonts:["STIX","TeX"]': 'availableFonts:[]', 'preferredFont:"TeX"': 'preferredFont:null',
                 'webFont:"TeX"': 'webFont:"STIX-Web"', 'imageFont:"TeX"': 'imageFont:null'}


def process_notebooks() -> Path:
    "Run nbdev's processing (what `nbdev_proc_nbs` does, minus its Quarto install step) into `_proc/`"
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    refresh_quarto_yml()
    _build_modidx()
    return Path(proc_nbs(force=True))


def _front_matter(source: str) -> dict:
    m = re.match(r'^---\s*\n(.*?)\n---', source, re.S)
    return yaml.safe_load(m.group(1)) or {} if m else {}


def _strip_quarto(md: str, site_host: str | None) -> str:
    md = re.sub(r'\{target="_blank"[^}]*\}', '', md)                # Quarto link attributes
    if site_host is None: return md                                   # README: keep absolute links to the site
    md = md.replace(site_host, '')                                    # doc links become relative to the site
    md = re.sub(r'\]\(/([\w\-./]+\.html)', r'](\1', md)
    return md


SECTION = re.compile(r'^(Arguments|Args|Returns|Raises|Example|Examples):[ \t]*\n((?:(?:[ ]{4}.*)?\n?)+)', re.M)


def docstring_sections(md: str) -> str:
    """zuko-style docstring sections as markdown: `Arguments:` (and `Returns:`, `Raises:`) with indented `name: text`
    lines become a bold heading over a list, `Example:` with indented `>>>` lines a Python code block. Plain markdown
    would run each section into one paragraph."""
    def section(m):
        title, body = m.group(1), m.group(2)
        lines = [l[4:] for l in body.rstrip('\n').split('\n')]
        while lines and not lines[-1].strip(): lines.pop()
        if title.startswith('Example'):
            code = '\n'.join(l[4:] if l.startswith(('>>> ', '... ')) else l for l in lines)
            return f"**{title}**\n\n```python\n{code}\n```\n\n"
        items = []
        for l in lines:
            entry = re.match(r'([\w*, ]+?):\s(.*)', l)
            if entry and not l.startswith(' '):
                names = ', '.join(f'`{n.strip()}`' for n in entry.group(1).split(','))
                items.append(f"- {names}: {entry.group(2)}")
            elif items: items[-1] += ' ' + l.strip()
            else: items.append(l)
        return f"**{title}**\n\n" + '\n'.join(items) + '\n\n'
    md = SECTION.sub(section, md)
    # nbdev italicises a docstring's first line; a summary that wraps onto more lines gets the whole paragraph
    return re.sub(r'^\*([^*\n]+)\*\n((?:[^\n]+\n)*?[^\n]+)(?=\n\n|\n?\Z)', lambda m: f"*{m.group(1)}\n{m.group(2)}*", md, flags=re.M)


def translate(nb_path: Path, site_host: str | None) -> tuple[nbformat.NotebookNode, dict]:
    "Turn one Quarto-ready notebook into a plain one for mkdocs-jupyter; returns (notebook, front matter)"
    nb = nbformat.read(nb_path, as_version=4)
    meta, cells = {}, []
    for cell in nb.cells:
        if cell.cell_type == 'raw' and cell.source.startswith('---'):
            meta = _front_matter(cell.source)
            head = f"# {meta.get('title', nb_path.stem)}"
            if meta.get('description'): head += f"\n\n> {meta['description']}"
            cells.append(nbformat.v4.new_markdown_cell(head))
            continue
        if cell.cell_type == 'markdown':
            if 'AUTOGENERATED! DO NOT EDIT' in cell.source: continue
            cell.source = _strip_quarto(cell.source, site_host)
        if cell.cell_type == 'code':
            directives = [l for l in cell.source.splitlines() if l.startswith('#|')]
            body = '\n'.join(l for l in cell.source.splitlines() if not l.startswith('#|')).strip()
            if any('output: asis' in d for d in directives):  # show_doc entries: their markdown output becomes the cell
                md = ''.join(o.get('data', {}).get('text/markdown', '') for o in cell.get('outputs', []))
                cells.append(nbformat.v4.new_markdown_cell(docstring_sections(_strip_quarto(md, site_host))))
                continue
            if any('echo: false' in d for d in directives): cell.metadata.setdefault('tags', []).append('remove_input')
            cell.source = body
            if not body and not cell.get('outputs'): continue
        cells.append(cell)
    nb.cells = cells
    return nb, meta


def copy_mathjax(dest: Path):
    import jupyter_server_mathjax
    src = Path(jupyter_server_mathjax.__file__).parent / 'static'
    for rel in MATHJAX_FILES:
        s, d = src / rel, dest / rel
        if s.is_dir(): shutil.copytree(s, d, dirs_exist_ok=True)
        elif s.exists(): d.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(s, d)
    config = dest / 'config' / 'TeX-AMS-MML_HTMLorMML-full.js'
    text = config.read_text()
    for old, new in FONT_SETTINGS.items():
        if old not in text: raise RuntimeError(f'unexpected MathJax config: {old} not found in {config}')
        text = text.replace(old, new)
    config.write_text(text)


def nav_title(meta: dict, name: str) -> str:
    "The page's title for the navigation, which shows text only (no markdown: backticks would appear as typed)"
    return meta.get('title', name).replace('`', '')


HEADING = re.compile(r'<h([1-6]) id="([^"]*)">(.*?)</h\1>', re.S)
HREF = re.compile(r'href="([^"#:]*\.html)?#([^"]*)"')


def _toc_slug(inner: str) -> str:
    "The anchor mkdocs' table of contents gives a heading: its text without code, slugified"
    from markdown.extensions.toc import slugify
    inner = re.sub(r'<a class="anchor-link".*?</a>', '', inner, flags=re.S)
    inner = re.sub(r'<code>.*?</code>', '', inner, flags=re.S)
    return slugify(html.unescape(re.sub(r'<[^>]+>', '', inner)), '-')


def _fix_headings(text: str) -> tuple[str, set]:
    """Make the heading ids of one page unique (nbconvert repeats them) and point the table of contents at them (its
    slugs drop code, so `Tests: from an nn.Linear` is `#tests-from-an` there); returns the page and its ids"""
    from markdown.extensions.toc import unique
    seen, used, toc_to_id = {}, set(), {}
    def heading(m):
        level, hid, inner = m.groups()
        n = seen.get(hid, 0); seen[hid] = n + 1
        new = hid if n == 0 else f'{hid}_{n}'
        toc_to_id.setdefault(unique(_toc_slug(inner), used), new)
        inner = inner.replace(f'class="anchor-link" href="#{hid}"', f'class="anchor-link" href="#{new}"')
        return f'<h{level} id="{new}">{inner}</h{level}>'
    text = HEADING.sub(heading, text)
    ids = set(re.findall(r'\bid="([^"]*)"', text))
    def toc(m):
        anchor = m.group(1)
        return f'href="#{toc_to_id.get(anchor, anchor) if anchor not in ids else anchor}" class="md-nav__link'
    return re.sub(r'href="#([^"]*)" class="md-nav__link', toc, text), ids


def _repository_links(text: str, site: Path, repo_url: str) -> str:
    "Links to repository files the site does not carry (e.g. `bench/results/*.md`) point at the repository instead"
    def link(m):
        target = m.group(1)
        if (site / target).exists() or not (ROOT / target).is_file(): return m.group(0)
        return f'href="{repo_url.rstrip("/")}/blob/main/{target}"'
    return re.sub(r'href="((?:bench|tools|tests|nbs)/[^"#:?]+)"', link, text)


def fix_links(site: Path, repo_url: str = '') -> int:
    """Repair what the site generators get wrong, so that `tools/check_links.py` passes: duplicate heading ids and the
    table of contents' anchors, doc links to `Class.method` (ids drop the dot) or to private names (no entry: link the
    page), the root-absolute asset paths of `404.html` (they break below a base URL), and the random cell ids (numbered, so that
    a render that changes nothing changes no page). Returns the links changed."""
    pages = {p: p.read_text() for p in site.glob('*.html')}
    ids = {}
    for p, text in pages.items(): pages[p], ids[p.name] = _fix_headings(text)
    changed = 0
    for p, text in pages.items():
        def link(m):
            nonlocal changed
            target, anchor = m.group(1) or '', m.group(2)
            page_ids = ids.get(target or p.name)
            if page_ids is None or anchor in page_ids: return m.group(0)
            changed += 1
            if anchor.replace('.', '') in page_ids: return f'href="{target}#{anchor.replace(".", "")}"'
            return f'href="{target or p.name}"'
        text = HREF.sub(link, text)
        if p.name == '404.html': text = re.sub(r'(href|src)="/(?!/)', r'\1="', text)
        numbers = iter(range(1, 1 << 30))   # nbdev's processing gives cells new random ids on every render: number them instead
        text = re.sub(r'id="cell-id=[^"]*"', lambda m: f'id="cell-{next(numbers)}"', text)
        if repo_url: text = _repository_links(text, site, repo_url)
        p.write_text(text)
    return changed


def write_mkdocs_yml(pages: list[tuple[str, str]], cfg) -> Path:
    config = {
        'site_name': cfg['title'], 'site_description': cfg['description'],
        'repo_url': cfg['git_url'], 'docs_dir': STAGE.name, 'site_dir': SITE.name, 'use_directory_urls': False,
        'theme': {'name': 'material', 'font': False, 'features': ['navigation.sections', 'toc.follow', 'content.code.copy'],
                  'palette': {'primary': 'indigo'}},
        'plugins': [{'search': {}}, {'mkdocs-jupyter': {
            'execute': False, 'include_source': False, 'ignore_h1_titles': True, 'include_requirejs': False,
            'custom_mathjax_url': 'assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full',
            'remove_tag_config': {'remove_input_tags': ['remove_input']}}}],
        'markdown_extensions': ['admonition', 'tables'], 'extra_css': ['site.css'],
        'nav': [{title: fname} for fname, title in pages],
    }
    path = ROOT / 'mkdocs.yml'
    path.write_text('# generated by tools/render_docs.py; edit that script, not this file\n' + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def readme_from(nb: nbformat.NotebookNode) -> str:
    "README.md content: the index notebook as GitHub markdown (what `nbdev_readme` produces with Quarto)"
    from nbconvert import MarkdownExporter
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return '<!-- WARNING: THIS FILE WAS AUTOGENERATED from nbs/index.ipynb by tools/render_docs.py! DO NOT EDIT! -->\n\n' + body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='fail if README.md differs from what nbs/index.ipynb produces')
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from nbdev.config import get_config
    cfg = get_config()
    site_host = f"{cfg['doc_host']}{cfg['doc_baseurl']}/"
    proc = process_notebooks()
    if STAGE.exists(): shutil.rmtree(STAGE)
    STAGE.mkdir()
    pages, readme = [], None
    for nb_path in sorted(proc.rglob('*.ipynb')):
        nb, meta = translate(nb_path, site_host)
        out_name = meta.get('output-file', nb_path.stem + '.html').replace('.html', '.ipynb')
        if nb_path.stem == 'index': out_name, readme = 'index.ipynb', translate(nb_path, None)[0]
        nbformat.write(nb, STAGE / out_name)
        pages.append((out_name, nav_title(meta, nb_path.stem)))
    pages.sort(key=lambda p: (p[0] != 'index.ipynb',))
    copy_mathjax(STAGE / 'assets' / 'mathjax')
    shutil.copy2(ROOT / 'nbs' / 'styles.css', STAGE / 'styles.css')
    shutil.copy2(ROOT / 'tools' / 'site.css', STAGE / 'site.css')
    results = ROOT / 'bench' / 'results'
    for plot in sorted(results.rglob('*.png')):   # the benchmark plots and sample grids the index page shows, in their folders
        target = STAGE / 'bench' / 'results' / plot.relative_to(results)
        target.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(plot, target)
    config = write_mkdocs_yml(pages, cfg)
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--clean', '--quiet', '-f', str(config)], cwd=ROOT, check=True)
    (SITE / '.nojekyll').touch()
    fix_links(SITE, cfg['git_url'])
    if readme is not None:
        text, path = readme_from(readme), ROOT / 'README.md'
        if args.check and path.read_text() != text:
            path.write_text(text); sys.exit('README.md was out of date with nbs/index.ipynb; regenerated it, commit the change')
        path.write_text(text)
    print(f"rendered {len(pages)} pages into {SITE.relative_to(ROOT)}/ and README.md")


if __name__ == '__main__':
    main()
