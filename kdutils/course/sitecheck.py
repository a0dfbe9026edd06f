"""Open every page of the course's website in a real browser and fail on what a reader would see.

``check_site(site)`` serves the folder on 127.0.0.1, opens each HTML page in headless Chromium (Debian's
``chromium``, driven by Playwright's Python API; Playwright's own browser downloads are never used),
waits for MathJax to typeset, and reports, page by page:

* a console error or an uncaught exception;
* a request that failed, or one to any host but the local server (the site must carry what it loads:
  offline, a CDN is an error);
* an image that did not load (``naturalWidth == 0``);
* math left raw: a ``$``, ``\\(`` or ``\\[`` in the text outside code, or a MathJax error;
* an internal link to a file that does not exist, or to an anchor its page lacks;
* any line of an assignment's solutions or hidden tests, in a page or a downloadable notebook
  (``secret_lines``: read from the masters' otter markers);
* a search (``search.html?q=distillation``) that finds no page;
* **accessibility** (WCAG 2.1 level AA): every violation axe-core finds with its WCAG 2.0 / 2.1 A and AA
  rules (axe-core as the ``axe-playwright-python`` package ships it: nothing downloaded), in the light theme
  and, for colour contrast, in the dark theme the site also offers; a figure (an image in a notebook's
  output) whose text alternative is missing, a file name, or too short to say what it shows; math without
  MathJax's assistive MathML (what a screen reader reads); and, on the landing page, a keyboard walk: Tab
  must move through the page's links and controls, each showing a visible focus indicator.

A screenshot of each page goes to ``shots/`` (the top 6,000 pixels at 1,280 wide), and the accessibility
report, page by page, to ``shots/accessibility.json``.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

# outside code, a page's text holds no TeX delimiter once MathJax has run: a `$` left there is math that was
# not recognised (e.g. `$$...$$` inside a paragraph, which MyST reads as inline math between two stray `$`)
TEX_DELIMITER = re.compile(r"\$|\\\(|\\\[")


def raw_math(prose: str, width: int = 30) -> list[str]:
    """Each TeX delimiter left in ``prose``, with the text around it (one excerpt per stretch)."""
    found, end = [], -1
    for m in TEX_DELIMITER.finditer(prose):
        if m.start() > end:
            end = m.start() + width
            found.append(" ".join(prose[max(0, m.start() - width):end].split()))
    return found
SCREENSHOT_HEIGHT = 6000

# collected in the page: broken images, raw math outside code, MathJax errors, ids, links, the text
PAGE_PROBE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const images = Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)
                      .map(i => i.getAttribute('src'));
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, .MathJax, mjx-assistive-mml';
  const main = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  const texts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && !n.parentElement.closest(skip)) texts.push(n.textContent);
  }
  const mathErrors = Array.from(document.querySelectorAll('mjx-merror, .MathJax_Error')).map(e => e.textContent);
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id)
                   .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.getAttribute('name')));
  const links = Array.from(document.querySelectorAll('a[href], link[href]')).map(a => a.href);
  const figures = Array.from(main.querySelectorAll('.cell_output img, .output img'))
                       .map(i => ({src: (i.getAttribute('src') || '').slice(0, 120), alt: i.getAttribute('alt')}));
  const math = document.querySelectorAll('mjx-container').length;
  const assistive = document.querySelectorAll('mjx-container mjx-assistive-mml').length;
  return {images, prose: texts.join(' '), mathErrors, ids, links, figures, math, assistive,
          height: document.documentElement.scrollHeight};
}"""

# WCAG 2.0 and 2.1, levels A and AA: the rules axe-core tags so (its best-practice rules are not run)
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
AXE_RUN = """async ([tags, rules]) => {
  const only = rules ? {type: 'rule', values: rules} : {type: 'tag', values: tags};
  const r = await axe.run(document, {runOnly: only, resultTypes: ['violations'], preload: false});
  return r.violations.map(v => ({rule: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
                                 where: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ': ' + n.html.slice(0, 100))}));
}"""
# the dark theme the Book theme offers (its toggle sets these attributes on <html>)
THEME = "(mode) => { document.documentElement.dataset.theme = mode; document.documentElement.dataset.mode = mode; }"
# where keyboard focus is, and whether it shows: a focus ring (outline) or a box-shadow
FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  const ring = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
  const shadow = s.boxShadow && s.boxShadow !== 'none';
  return {tag: e.tagName.toLowerCase(), text: (e.getAttribute('aria-label') || e.textContent || e.getAttribute('href') || '')
            .trim().slice(0, 60), visible: ring || shadow, inMain: !!e.closest('main'),
          key: e.dataset.kdWalk || (e.dataset.kdWalk = String(document.querySelectorAll('[data-kd-walk]').length + 1))};
}"""
# a figure's text alternative must say what it shows: not missing, not a file name, not a word or two
MIN_ALT = 40
FILE_NAME = re.compile(r"^\S*\.(png|jpe?g|svg|gif)$|^[./]|[0-9a-f]{16}", re.I)
KEYBOARD_TABS = 40


class BrowserUnavailable(RuntimeError):
    """No Chromium, or no Playwright, on this machine."""


def axe_source() -> str:
    """axe-core's script, from the ``axe-playwright-python`` package (the ``[site]`` extra): no download."""
    from importlib.resources import files

    try:
        return (files("axe_playwright_python") / "axe.min.js").read_text()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise BrowserUnavailable("axe-core is not installed: pip install axe-playwright-python "
                                 "(the course's [site] extra)") from exc


def figure_alt_problem(alt: str | None) -> str | None:
    """Why a figure's text alternative does not describe it, or None."""
    alt = (alt or "").strip()
    if not alt:
        return "a figure without a text alternative (give its plotting cell mystnb.image.alt metadata)"
    if FILE_NAME.search(alt):
        return f"a figure whose text alternative is a file name, not a description: {alt[:60]!r}"
    if len(alt) < MIN_ALT:
        return f"a figure whose text alternative is too short to say what it shows: {alt!r}"
    return None


def accessibility(page, axe: str) -> tuple[list[str], dict]:
    """axe-core's WCAG 2.1 A/AA rules on ``page`` (light theme), then its colour contrast in the dark theme."""
    page.evaluate(axe)
    light = page.evaluate(AXE_RUN, [AXE_TAGS, None])
    page.evaluate(THEME, "dark")
    dark = page.evaluate(AXE_RUN, [AXE_TAGS, ["color-contrast"]])
    problems = [f"{theme}accessibility: {v['rule']} ({v['impact']}): {v['help']}; {v['count']} element(s), e.g. "
                + " | ".join(v["where"]) for theme, found in (("", light), ("dark theme: ", dark)) for v in found]
    return problems, {"light": light, "dark": dark}


def keyboard_walk(page, tabs: int = KEYBOARD_TABS) -> tuple[list[str], list[dict]]:
    """Press Tab ``tabs`` times from the top of ``page``: focus must move, show, and reach the main content."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    stops, problems = [], []
    for _ in range(tabs):
        page.keyboard.press("Tab")
        now = page.evaluate(FOCUSED)
        if now is None:
            continue
        stops.append(now)
        if not now["visible"]:
            problems.append(f"keyboard: focus on <{now['tag']}> {now['text']!r} shows no visible focus indicator")
    focusable = page.evaluate("() => document.querySelectorAll('a[href], button, input, select, textarea, "
                              "[tabindex]:not([tabindex=\"-1\"])').length")
    if len({s["key"] for s in stops}) < min(5, tabs, focusable):
        problems.append(f"keyboard: {tabs} presses of Tab reached only {len({s['key'] for s in stops})} element(s)")
    elif not any(s["inMain"] for s in stops):
        problems.append(f"keyboard: {tabs} presses of Tab never reached the page's main content")
    return problems, stops


def chromium() -> str:
    """The Chromium executable: ``$KD_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the PATH."""
    for name in (os.environ.get("KD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    raise BrowserUnavailable("no Chromium found: install Debian's chromium package (sudo apt-get install chromium) "
                             "or set KD_CHROMIUM to a Chromium or Chrome executable")


def _normal(line: str) -> str:
    return " ".join(line.split())


def _lines(text: str, min_len: int = 0) -> set[str]:
    return {n for n in map(_normal, text.splitlines()) if len(n) >= min_len}


BLOCK_TAGS = {"p", "div", "pre", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "details",
              "summary", "section", "article", "blockquote", "table", "ul", "ol", "dt", "dd", "main", "nav"}


def html_text(html: str) -> str:
    """The text of an HTML page, a line break at every block element, hidden parts included, scripts not."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts, self.skip = [], 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style")
            if tag in BLOCK_TAGS:
                self.parts.append("\n")

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style") and self.skip > 0
            if tag in BLOCK_TAGS:
                self.parts.append("\n")

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return "".join(parser.parts)


def _notebook_text(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def secret_lines(min_len: int = 16) -> set[str]:
    """Lines of the assignments' masters that a student must never see: solutions, hidden tests, rubrics.

    Read from the masters' own markers (not from a student version, which is what is under test), less
    any line a master also shows the student or a course notebook teaches. Lines shorter than
    ``min_len`` characters (``else:``, ``return x``) are too common to tell anything.
    """
    from . import layout, otterformat

    public = set(otterformat.PLACEHOLDERS)
    for nb in layout.course_notebooks():
        public |= _lines(_notebook_text(nb))
    secrets = set()
    for name in layout.list_assignments():
        secret, visible = otterformat.secret_and_visible(layout.master(name))
        secrets |= _lines(secret, min_len)
        public |= _lines(visible)
    return secrets - public


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(folder: Path):
    """Serve ``folder`` on 127.0.0.1 (a free port) for the duration of the block; yield the base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def site_pages(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to it (the theme's own folders, ``_*``, left out)."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not any(part.startswith("_") for part in p.relative_to(site).parts))


def _target_file(site: Path, path: str) -> Path:
    target = site / unquote(path).lstrip("/")
    return target / "index.html" if target.is_dir() else target


def _check_page(context, url: str, rel: str, current: list[str], *, secrets: set[str], axe: str | None,
                walk: bool, shots: Path | None, report: dict) -> tuple[set[str], list[str]]:
    """Open one page and append what is wrong with it to ``current`` (errors, unloaded images, raw math, a
    leaked solution line, figures without a text alternative, formulas a screen reader cannot read, axe-core's
    findings, and on the ``walk`` page the keyboard walk); returns the page's ids and links."""
    host = urlparse(url).netloc
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and current.append(f"console error: {m.text[:300]}"))
    page.on("pageerror", lambda e: current.append(f"uncaught exception: {str(e)[:300]}"))
    page.on("requestfailed", lambda r: urlparse(r.url).netloc == host and
            current.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and current.append(f"HTTP {r.status} for {r.url}"))
    page.goto(url, wait_until="load")
    probe = page.evaluate(PAGE_PROBE)
    page.wait_for_timeout(50)     # late console messages
    current += [f"image did not load: {src[:120]}" for src in probe["images"]]
    current += [f"math left raw (a TeX delimiter in the text): {' '.join(m.split())!r}" for m in raw_math(probe["prose"])[:5]]
    current += [f"MathJax error: {err[:120]}" for err in probe["mathErrors"]]
    leaked = _lines(html_text(page.content())) & secrets
    current += [f"shows a line of an assignment's solution or hidden tests: {line[:100]!r}" for line in sorted(leaked)[:5]]
    current += [f"{why} ({fig['src'][:60]})" for fig in probe["figures"] if (why := figure_alt_problem(fig["alt"]))]
    if probe["math"] and probe["assistive"] < probe["math"]:
        current.append(f"{probe['math'] - probe['assistive']} formula(s) without assistive MathML: a screen reader "
                       "cannot read them (MathJax's enableAssistiveMml)")
    if shots is not None:
        name = rel.replace("/", "__").removesuffix(".html") + ".png"
        height = max(1, min(int(probe["height"]), SCREENSHOT_HEIGHT))
        page.screenshot(path=str(Path(shots) / name), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": height})
    found, report["pages"][rel] = accessibility(page, axe) if axe is not None else \
        ([], {"light": [], "dark": [], "skipped": True})
    current += found
    if walk:
        page.evaluate(THEME, "light")
        found, stops = keyboard_walk(page)
        current += found
        report["keyboard"] = {"page": rel, "stops": stops}
    report["pages"][rel]["figures"] = probe["figures"]
    page.close()
    return set(probe["ids"]), list(probe["links"])


def _search_finds(context, base: str, word: str) -> bool:
    """Whether the site's search page, offline, lists a page for ``word``."""
    page = context.new_page()
    page.goto(f"{base}search.html?q={word}", wait_until="load")
    try:
        page.wait_for_selector("#search-results li", timeout=15_000)
        return True
    except Exception:
        return False
    finally:
        page.close()


def _broken_links(site: Path, host: str, links: list[tuple[str, str]], ids: dict[str, set[str]]) -> list[str]:
    """Internal links whose file, or whose anchor in it, does not exist."""
    problems = []
    for rel, href in links:
        url = urlparse(href)
        if url.netloc != host:
            continue
        path, fragment = urldefrag(url.path)[0], url.fragment
        target = _target_file(site, path)
        if not target.is_file():
            problems.append(f"{rel}: broken link to {unquote(path)} (no such file)")
            continue
        key = target.relative_to(site).as_posix()
        if fragment and key in ids and unquote(fragment) not in ids[key]:
            problems.append(f"{rel}: broken link to {key}#{fragment} (no such anchor)")
    return problems


def _leaky_downloads(site: Path, secrets: set[str]) -> list[str]:
    """The downloadable notebooks (what a student takes away) that hold a secret line."""
    problems = []
    for nb in site.rglob("*.ipynb"):
        leaked = _lines(_notebook_text(nb)) & secrets
        if leaked:
            problems.append(f"{nb.relative_to(site)}: a downloadable notebook holds a line of an assignment's "
                            f"solution or hidden tests: {sorted(leaked)[0][:100]!r}")
    return problems


def check_site(site: Path, *, shots: Path | None = None, secrets: set[str] | None = None,
               pages: list[str] | None = None, search_word: str | None = "distillation",
               walk: str | None = "index.html", axe_pages: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Open every page of ``site`` in headless Chromium; return (problems, pages checked).

    With ``search_word``, the site's search page must also find at least one page for it; ``walk`` is the
    page whose keyboard navigation is walked (None: none); ``axe_pages`` the pages axe-core checks (None:
    every page; axe takes seconds a page, and the tests of this module need only some).
    """
    site = Path(site).resolve()
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"{site} holds no index.html: build the site first (make site)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable("Playwright is not installed: pip install playwright (its browsers are not "
                                 "needed: Debian's chromium is used)") from exc
    executable = chromium()
    axe = axe_source()
    secrets = secret_lines() if secrets is None else secrets
    pages = site_pages(site) if pages is None else pages
    if shots is not None:
        shutil.rmtree(shots, ignore_errors=True)
        Path(shots).mkdir(parents=True)
    problems: list[str] = []
    ids: dict[str, set[str]] = {}
    links: list[tuple[str, str]] = []
    report: dict = {"standard": "WCAG 2.1 A and AA (axe-core rules tagged " + ", ".join(AXE_TAGS) + ")", "pages": {}}

    with serve(site) as base, sync_playwright() as pw:
        host = urlparse(base).netloc
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
        current: list[str] = []          # the page being checked: what is wrong with it so far

        def outside(route):
            current.append(f"loads {route.request.url} from outside the site (bundle it: the site must work offline)")
            route.abort()

        context.route(lambda url: urlparse(url).netloc not in (host, "") and not url.startswith("data:"), outside)
        for rel in pages:
            current.clear()
            ids[rel], found = _check_page(context, base + rel, rel, current, secrets=secrets, walk=rel == walk,
                                          axe=axe if axe_pages is None or rel in axe_pages else None,
                                          shots=shots, report=report)
            links += [(rel, href) for href in found]
            problems += [f"{rel}: {p}" for p in dict.fromkeys(current)]
        if search_word and "search.html" in pages and not _search_finds(context, base, search_word):
            problems.append(f"search.html: searching {search_word!r} finds no page")
        browser.close()

    problems += _broken_links(site, host, links, ids)
    if shots is not None:
        report["violations"] = sum(v["count"] for r in report["pages"].values() for v in r["light"] + r["dark"])
        (Path(shots) / "accessibility.json").write_text(json.dumps(report, indent=1))
    problems += _leaky_downloads(site, secrets)
    return list(dict.fromkeys(problems)), pages
