#!/usr/bin/env python3
"""Checks the built website (website/book/, from `mdbook build website`) as a reader would meet it:
served over HTTP on localhost, every page of the book fetched, every internal link and image
followed (to a page that answers 200 and, for `#fragment` links, has that id), and with
`--screenshots DIR`, the home page and the components reference opened in headless Chromium and
saved as PNG for a person to look at.

Usage: scripts/check-website.py [--book website/book] [--screenshots DIR]
"""

import argparse
import functools
import html.parser
import http.server
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The pages whose screenshots are looked at: the home page and one reference page.
SCREENSHOT_PAGES = {"home.png": "index.html", "components.png": "website/components.html"}


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


class QuietHandler(http.server.SimpleHTTPRequestHandler):
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


def screenshots(book, directory):
    """Saves the screenshot pages as PNGs with headless Chromium (Debian's `chromium`)."""
    browser = shutil.which("chromium")
    if browser is None:
        return ["chromium is not installed (apt-get install chromium)"]
    directory.mkdir(parents=True, exist_ok=True)
    site, problems = Site(book), []
    try:
        for name, page in SCREENSHOT_PAGES.items():
            output = directory / name
            subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--window-size=1280,900", f"--screenshot={output}", site.base + page],
                capture_output=True, timeout=120, check=False,
            )
            if not output.exists() or output.stat().st_size < 10_000:
                problems.append(f"no screenshot of {page} (chromium made {output} empty or none)")
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


if __name__ == "__main__":
    main()
