"""Bytes to text: the encoding guessed, and HTML's visible text with its headings as '#' lines."""

from __future__ import annotations

import re
from html.parser import HTMLParser


def decode_text(data: bytes) -> str:
    """Bytes to text; undecodable bytes become U+FFFD rather than stopping the file."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Mostly-UTF-8 with stray bytes stays UTF-8; otherwise Latin-1 keeps every byte readable.
        text = data.decode("utf-8", errors="replace")
        if text.count("\ufffd") > len(text) // 20:
            return data.decode("cp1252", errors="replace")
        return text


class _HTMLText(HTMLParser):
    """HTML to plain text, headings kept as Markdown '#' lines so the chunker sees structure."""

    BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "pre", "blockquote", "table",
             "ul", "ol", "dd", "dt", "header", "footer", "main", "nav", "figure", "hr"}
    SKIP = {"script", "style", "noscript", "template", "head", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.title: list[str] = []
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skip_depth += 1
        if tag == "title":
            self.in_title = True
        if re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag not in ("br", "li", "tr") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skip_depth:
            self.skip_depth -= 1
        if tag == "title":
            self.in_title = False
        if re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self.parts.append("\n\n" if tag.startswith("h") or tag == "p" else "\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip_depth:
            self.parts.append(data)

    def text(self) -> str:
        raw = "".join(self.parts)
        raw = re.sub(r"[ \t\r\f\v]+", " ", raw)
        raw = re.sub(r"(?m)^ +| +$", "", raw)
        raw = re.sub(r"(?m)^(#+) *\n+", r"\1 ", raw)
        return re.sub(r"\n{3,}", "\n\n", raw).strip()


def html_to_text(html: str) -> str:
    """Visible text of an HTML page with its headings as '#' lines."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text()
