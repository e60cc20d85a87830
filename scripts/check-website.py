#!/usr/bin/env python3
"""Checks the built website (website/book/, from `mdbook build website`) as a reader would meet it:
served over HTTP on localhost, every page of the book fetched, every internal link and image
followed (to a page that answers 200 and, for `#fragment` links, has that id), and with
`--screenshots DIR`, the home page and one component's reference page opened in headless Chromium
(Debian's `chromium`) at 1280x900: saved as PNG in DIR for a person to look at, and measured in the
same browser for what makes a page look broken (see `LAYOUT_PROBE`).

Usage: scripts/check-website.py [--book website/book] [--screenshots DIR]
"""

import argparse
import functools
import html
import html.parser
import http.server
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The pages whose screenshots are looked at: the home page (prose and the architecture picture)
# and the reference page with the widest option table.
SCREENSHOT_PAGES = {"home.png": "index.html", "reference-kafka-sink.png": "reference/sinks/kafka.html"}
# The browser's window, as a laptop shows the site.
WINDOW = (1280, 900)
# A page with less text than this in its <main> counts as blank (a title and a sentence).
MIN_TEXT = 200
# Run in the page once it has loaded (the server adds it to a page asked for with ?layout-probe):
# measures, at the window's size, what a reader would see as broken, and writes it into the page
# as JSON in <pre id="layout-probe">, which `chromium --dump-dom` prints. Reported: the page's
# width beyond the window (a horizontal scroll bar for the whole page); elements of the content
# column sticking out of it, left or right, unless inside a box that scrolls or clips (mdBook puts
# wide tables and code in such boxes); the content column overlapping the sidebar; images that did
# not load or show at zero size; the title and the amount of text of <main>, and where the title
# is (it must be on the first screen).
LAYOUT_PROBE = """
<script>
addEventListener("load", async () => {
  const main = document.querySelector("main");
  const report = {window: innerWidth, pageWidth: document.documentElement.scrollWidth,
                  text: 0, title: "", titleTop: null, sticksOut: [], overlap: null, images: []};
  if (main) {
    const column = main.getBoundingClientRect();
    report.text = main.innerText.trim().length;
    const title = main.querySelector("h1");
    if (title) {
      report.title = title.innerText.trim();
      report.titleTop = title.getBoundingClientRect().top;
    }
    const scrolls = (element) => {
      for (let e = element.parentElement; e && e !== main; e = e.parentElement) {
        if (["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(e).overflowX)) return true;
      }
      return false;
    };
    for (const element of main.querySelectorAll("*")) {
      const box = element.getBoundingClientRect();
      if (box.width === 0 || (box.right <= column.right + 1 && box.left >= column.left - 1)) continue;
      if (scrolls(element)) continue;
      report.sticksOut.push(`<${element.tagName.toLowerCase()}> ${Math.round(box.left)}..` +
        `${Math.round(box.right)} outside ${Math.round(column.left)}..${Math.round(column.right)}: ` +
        element.textContent.trim().slice(0, 60));
    }
    const sidebar = document.querySelector("nav.sidebar, #sidebar, #mdbook-sidebar");
    if (sidebar) {
      const side = sidebar.getBoundingClientRect();
      const shown = getComputedStyle(sidebar).visibility !== "hidden" && side.right > 0 && side.width > 0;
      if (shown && side.right > column.left + 1) {
        report.overlap = `the sidebar ends at ${Math.round(side.right)}, the content starts at ${Math.round(column.left)}`;
      }
    }
  }
  // decode() fails for an image that did not load or is not one (naturalWidth would not do: an
  // SVG with only a viewBox has none). One the page hides on purpose (mdBook keeps a hidden
  // copy of each image to show enlarged on a click) only has to load.
  for (const image of document.images) {
    const decoded = await image.decode().then(() => true, () => false);
    if (!decoded || (image.checkVisibility() && image.getBoundingClientRect().width === 0)) {
      report.images.push(image.getAttribute("src"));
    }
  }
  const out = document.createElement("pre");
  out.id = "layout-probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>
"""


class Links(html.parser.HTMLParser):
    """The ids a page defines and the URLs it links to or loads."""

    def __init__(self):
        super().__init__()
        self.ids, self.urls = set(), []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if tag == "a" and attributes.get("name"):
            self.ids.add(attributes["name"])
        for name in ("href", "src"):
            if attributes.get(name):
                self.urls.append(attributes[name])


def is_internal(url):
    parts = urllib.parse.urlsplit(url)
    return not parts.scheme and not parts.netloc


class Site:
    """The book served by a local HTTP server for the duration of the check."""

    def __init__(self, book):
        handler = functools.partial(QuietHandler, directory=str(book))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.pages = {}

    def fetch(self, url):
        """(status, body) of a URL, cached; the body only for HTML."""
        if url not in self.pages:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    kind = response.headers.get_content_type()
                    content = response.read()
                    body = content.decode("utf-8", "replace") if kind == "text/html" else ""
                    self.pages[url] = (response.status, body)
            except urllib.error.HTTPError as error:
                self.pages[url] = (error.code, "")
        return self.pages[url]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the book, and a page asked for with `?layout-probe` with `LAYOUT_PROBE` added."""

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if query != "layout-probe" or not path.endswith(".html"):
            return super().do_GET()
        try:
            page = Path(self.translate_path(path)).read_text(encoding="utf-8")
        except OSError:
            return self.send_error(404)
        body = page.replace("</body>", LAYOUT_PROBE + "</body>", 1).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments):
        pass


def check_links(book):
    """Problems with the book's internal links, and how many pages and links were followed."""
    site, problems, followed = Site(book), [], 0
    try:
        pages = sorted(book.rglob("*.html"))
        for page in pages:
            page_url = urllib.parse.urljoin(site.base, str(page.relative_to(book)))
            status, body = site.fetch(page_url)
            if status != 200:
                problems.append(f"{page_url}: answered {status}")
                continue
            parser = Links()
            parser.feed(body)
            for url in parser.urls:
                if not is_internal(url):
                    continue
                followed += 1
                target = urllib.parse.urljoin(page_url, url)
                address, _, fragment = target.partition("#")
                address = address.split("?")[0]
                if address == page_url.split("#")[0] and fragment:
                    target_ids = parser.ids
                else:
                    status, target_body = site.fetch(address)
                    if status != 200:
                        problems.append(f"{page.relative_to(book)}: {url} answers {status}")
                        continue
                    target_parser = Links()
                    target_parser.feed(target_body)
                    target_ids = target_parser.ids
                if fragment and urllib.parse.unquote(fragment) not in target_ids:
                    problems.append(f"{page.relative_to(book)}: {url}: the page has no #{fragment}")
        return problems, len(pages), followed
    finally:
        site.close()


def chromium(browser, url, *action):
    """Runs headless Chromium on `url` at the window's size, in a profile of its own that is
    deleted afterwards, with nothing that would reach past localhost; returns its stdout."""
    with tempfile.TemporaryDirectory(prefix="tapio-chromium-") as profile:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
             *action, url],
            capture_output=True, text=True, timeout=120, check=False,
        )
    return result.stdout


def png_size(path):
    """(width, height) of the PNG at `path`, or None if it is not one."""
    header = path.read_bytes()[:24] if path.exists() else b""
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", header[16:24])


def layout_problems(page, report):
    """What `report` (from `LAYOUT_PROBE`) shows wrong with `page`, as sentences."""
    problems = []
    if report["text"] < MIN_TEXT or not report["title"]:
        problems.append(f"{page}: looks blank ({report['text']} characters in <main>, "
                        f"title {report['title']!r})")
    elif report["titleTop"] is None or not 0 <= report["titleTop"] < WINDOW[1]:
        problems.append(f"{page}: the title is not on the first screen (top {report['titleTop']})")
    if report["pageWidth"] > report["window"]:
        problems.append(f"{page}: scrolls sideways ({report['pageWidth']} px wide in a "
                        f"{report['window']} px window)")
    problems += [f"{page}: sticks out of the content column: {what}" for what in report["sticksOut"]]
    if report["overlap"]:
        problems.append(f"{page}: the content overlaps the sidebar ({report['overlap']})")
    problems += [f"{page}: the image {src} does not show" for src in report["images"]]
    return problems


def screenshots(book, directory, pages=None):
    """Saves each of `pages` (name of the PNG -> page) as a PNG in `directory`, taken by headless
    Chromium, and measures it there for layout problems; returns the problems found."""
    browser = shutil.which("chromium")
    if browser is None:
        return ["chromium is not installed (apt-get install chromium)"]
    directory.mkdir(parents=True, exist_ok=True)
    site, problems = Site(book), []
    try:
        for name, page in (pages or SCREENSHOT_PAGES).items():
            output = directory / name
            output.unlink(missing_ok=True)
            chromium(browser, site.base + page, f"--screenshot={output}")
            # A blank page of this size compresses to a few kB; any page with text is larger.
            if png_size(output) != WINDOW or output.stat().st_size < 10_000:
                problems.append(f"{page}: no screenshot, or a blank one ({output})")
            dom = chromium(browser, site.base + page + "?layout-probe",
                           "--virtual-time-budget=5000", "--dump-dom")
            found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
            if found is None:
                problems.append(f"{page}: the layout probe did not run (no report in the DOM)")
                continue
            problems += layout_problems(page, json.loads(html.unescape(found.group(1))))
    finally:
        site.close()
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=ROOT / "website" / "book")
    parser.add_argument("--screenshots", type=Path)
    arguments = parser.parse_args()
    if not (arguments.book / "index.html").exists():
        sys.exit(f"check-website: no book at {arguments.book} (run mdbook build website)")
    problems, pages, followed = check_links(arguments.book)
    if arguments.screenshots:
        problems += screenshots(arguments.book, arguments.screenshots)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(f"check-website: {len(problems)} problems")
    print(f"check-website: {pages} pages served, {followed} internal links followed, none broken")
    if arguments.screenshots:
        shots = ", ".join(str(arguments.screenshots / name) for name in SCREENSHOT_PAGES)
        print(f"check-website: {len(SCREENSHOT_PAGES)} pages shown in Chromium at "
              f"{WINDOW[0]}x{WINDOW[1]} with no layout problem; screenshots: {shots}")


if __name__ == "__main__":
    main()
