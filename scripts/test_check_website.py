"""Tests of scripts/check-website.py's browser check: real headless Chromium (Debian's) on small
pages served from a temporary folder, one good and one for each layout problem the check must
catch. Skipped where chromium is not installed. Run: python3 -m unittest scripts/test_check_website.py
"""

import importlib.util
import shutil
import tempfile
import unittest
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "check_website", Path(__file__).resolve().parent / "check-website.py")
check_website = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_website)

PROSE = "<p>" + "A sentence of prose that a reader reads on this page. " * 20 + "</p>"
# A page shaped like mdBook's: a sidebar on the left, the content column beside it.
PAGE = """<!DOCTYPE html><html><head><style>
body {{ margin: 0; font-family: sans-serif; }}
nav.sidebar {{ position: fixed; left: 0; top: 0; bottom: 0; width: {sidebar}px; background: #eee; }}
main {{ margin-left: 320px; max-width: 750px; }}
</style></head><body><nav class="sidebar">contents</nav><main>{main}</main></body></html>"""
PAGES = {
    "good.html": PAGE.format(sidebar=300, main="<h1>Good</h1>" + PROSE
                             + '<div style="overflow-x: auto"><div style="width: 3000px">'
                             "a wide table in a box that scrolls</div></div>"),
    "wide.html": PAGE.format(sidebar=300, main="<h1>Wide</h1>" + PROSE
                             + '<pre style="width: 2000px">a line that runs far off the page</pre>'),
    "blank.html": PAGE.format(sidebar=300, main=""),
    "overlap.html": PAGE.format(sidebar=500, main="<h1>Overlap</h1>" + PROSE),
    "image.html": PAGE.format(sidebar=300, main="<h1>Image</h1>" + PROSE + '<img src="missing.svg">'),
}


@unittest.skipIf(shutil.which("chromium") is None, "chromium is not installed")
class BrowserCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory(prefix="tapio-check-website-")
        book = Path(cls.folder.name) / "book"
        book.mkdir()
        for name, text in PAGES.items():
            (book / name).write_text(text)
        shots = {name.replace(".html", ".png"): name for name in PAGES}
        cls.problems = check_website.screenshots(book, Path(cls.folder.name) / "shots", shots)

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def problems_of(self, page):
        return [problem for problem in self.problems if problem.startswith(page + ":")]

    def test_a_good_page_with_a_scrolling_wide_table_passes(self):
        self.assertEqual(self.problems_of("good.html"), [])

    def test_content_wider_than_the_window_is_caught(self):
        problems = "\n".join(self.problems_of("wide.html"))
        self.assertIn("scrolls sideways", problems)
        self.assertIn("sticks out of the content column: <pre>", problems)

    def test_a_blank_page_is_caught(self):
        self.assertIn("looks blank", "\n".join(self.problems_of("blank.html")))

    def test_content_under_the_sidebar_is_caught(self):
        self.assertIn("overlaps the sidebar", "\n".join(self.problems_of("overlap.html")))

    def test_an_image_that_does_not_load_is_caught(self):
        self.assertIn("the image missing.svg does not show", "\n".join(self.problems_of("image.html")))


if __name__ == "__main__":
    unittest.main()
