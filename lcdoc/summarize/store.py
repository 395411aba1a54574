"""Where summaries live: a cache keyed by the document's hash and the summary settings, and,
with --out, one Markdown file per document (mirroring the folders given) plus index.md.

Results are written as each document finishes (atomically, 0600), so a re-run skips finished
work and an interrupted run loses at most the documents in progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

from lcdoc.ingest import Document
from lcdoc.summarize.document import Summary

# index.md is rewritten at most this often during a run (and once at the end): rewriting it after
# every document made a folder of N documents cost O(N^2) writes.
INDEX_EVERY_S = 10.0


def settings_key(model_id: str, style: str, max_words: int, prompt: str | None, n_ctx: int) -> str:
    """What, besides the document, decides a summary: a changed setting redoes it."""
    raw = json.dumps([model_id, style, max_words, prompt, n_ctx])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _atomic_write(path: Path, text: str) -> None:
    """A summary is document text: 0600, in folders made 0700 (lcdoc.private)."""
    from lcdoc.private import private_dir, write_private

    private_dir(path.parent)
    write_private(path, text, errors="backslashreplace")  # a non-UTF-8 file name


def _md(s: Summary, key: str) -> str:
    """The summary's file: a small comment (the document's hash and the settings, what decides
    whether it is still current), its title and the summary."""
    meta = json.dumps({"sha256": s.sha256, "settings": key, "route": s.route, "chunks": s.chunks,
                       "tokens": s.tokens, "seconds": round(s.seconds, 2), "levels": s.levels})
    return f"<!-- lcdoc-summary {meta} -->\n# {Path(s.path).name}\n\n{s.summary}\n"


def _md_summary(meta: dict, body: str) -> str:
    """The summary text of a summary file (older files carried it in the comment too)."""
    if "summary" in meta:
        return meta["summary"]
    return body.split("\n", 1)[1].strip() if body.startswith("# ") else body.strip()


def _read_md(path: Path) -> tuple[dict, str] | None:
    try:
        head, _, body = path.read_text().partition("\n")
    except OSError:
        return None
    if not head.startswith("<!-- lcdoc-summary "):
        return None
    try:
        return json.loads(head[len("<!-- lcdoc-summary "):-4]), body
    except json.JSONDecodeError:
        return None


def _first_sentence(text: str) -> str:
    """The summary's first whole sentence, its own Markdown headings and bullets left out."""
    from lcdoc.qa.evidence import first_sentence

    text = re.sub(r"(?m)^\s*#+\s.*$", "", text)
    return first_sentence(re.sub(r"(?m)^\s*(?:[-*+]|\d+[.)])\s+", "", text))


def document_title(doc: Document) -> str:
    """The document's own title: its first level-1 heading (a PDF's first bookmark, a Markdown
    '# ', an underlined title) near the start, else nothing (index.md then shows the file name)."""
    from lcdoc.ingest.chunking import find_headings

    heads = list(doc.outline) or find_headings(doc.text[:20_000], doc.kind)
    for pos, level, title in heads[:3]:
        if level == 1 and pos < 4000 and 2 <= len(title) <= 120:
            return " ".join(title.split())
    return ""


def write_index(out_dir: Path, summaries: list[Summary], failed: list[tuple[str, str]],
                links: dict[str, Path] | None = None, titles: dict[str, str] | None = None
                ) -> None:
    """out_dir/index.md: a table of contents, each document a link to its summary (relative to
    index.md) with the summary's whole first sentence, then every failure."""
    lines = ["# Summaries", "", f"{len(summaries)} document(s).", ""]
    for s in sorted(summaries, key=lambda x: x.path):
        name = Path(s.path).name
        own = (titles or {}).get(s.path, "")
        label = (f"{own} ({name})" if own else name).replace("[", "\\[").replace("]", "\\]")
        target = (links or {}).get(s.path)
        title = f"[{label}]({quote(target.relative_to(out_dir).as_posix())})" if target else label
        lines.append(f"- {title}: {_first_sentence(s.summary)}")
    if failed:
        lines += ["", "## Not summarised", ""] + [f"- {Path(p).name}: {why}" for p, why in failed]
    _atomic_write(out_dir / "index.md", "\n".join(lines) + "\n")





class SummaryStore:
    """The summaries of one run: found (a current Markdown file, else the cache) or saved as
    each document finishes; index.md rewritten now and then and at the end."""

    def __init__(self, cache_dir: Path, out_dir: Path | None, roots: list[Path], key: str) -> None:
        self.cache_dir = cache_dir
        self.out_dir = out_dir
        self.roots = roots
        self.key = key  # settings_key: what, besides the document, decides a summary
        self.claimed: dict[Path, str] = {}  # output file -> the document it belongs to
        self.titles: dict[str, str] = {}  # document -> its own title, for index.md
        self._index_written = time.monotonic()

    def out_path(self, f: Path) -> Path:
        """Mirror of the folders; two documents that would share a file name get the second a
        short hash of its path, so no summary overwrites another's."""
        assert self.out_dir is not None
        base = self.out_dir / (f.name + ".md")
        for r in self.roots:
            if r.is_dir() and (r == f or r in f.parents):
                base = self.out_dir / f.relative_to(r).with_suffix(f.suffix + ".md")
                break
        target = base
        if self.claimed.setdefault(target, str(f)) != str(f):
            tag = hashlib.sha256(os.fsencode(os.path.realpath(f))).hexdigest()[:8]
            target = base.with_name(f"{base.name[:-3]}.{tag}.md")
            self.claimed[target] = str(f)
        return target

    def _cache_file(self, doc: Document) -> Path:
        return self.cache_dir / f"{doc.sha256[:32]}-{self.key}.json"

    def find(self, f: Path, doc: Document) -> Summary | None:
        """The finished summary of this document at these settings, if there is one."""
        self.titles[str(f)] = document_title(doc)
        target = self.out_path(f) if self.out_dir else None
        prior = _read_md(target) if target and target.exists() else None
        if prior and prior[0].get("sha256") == doc.sha256 and prior[0].get("settings") == self.key:
            m, body = prior
            return Summary(str(f), _md_summary(m, body), m["route"], m["chunks"], m["tokens"],
                           m["seconds"], m.get("levels", 1), doc.sha256)
        cache_file = self._cache_file(doc)
        if cache_file.exists():
            m = json.loads(cache_file.read_text())
            return Summary(str(f), m["summary"], m["route"], m["chunks"], m["tokens"],
                           m["seconds"], m.get("levels", 1), doc.sha256)
        return None

    def save(self, s: Summary, fresh: bool) -> None:
        """A summary into the cache (when just made) and its Markdown file (unless current)."""
        if fresh:
            _atomic_write(self.cache_dir / f"{s.sha256[:32]}-{self.key}.json",
                          json.dumps({**s.as_json(), "levels": s.levels}))
        if self.out_dir:
            target = self.out_path(Path(s.path))
            prior = _read_md(target) if target.exists() else None
            if not (prior and prior[0].get("sha256") == s.sha256
                    and prior[0].get("settings") == self.key):
                _atomic_write(target, _md(s, self.key))

    def write_index(self, summaries: list[Summary], failed: list[tuple[str, str]],
                    now: bool = True) -> None:
        """index.md, at once or (now=False) when INDEX_EVERY_S has passed since the last."""
        if not self.out_dir or (not now and time.monotonic() - self._index_written < INDEX_EVERY_S):
            return
        write_index(self.out_dir, summaries, failed, {d: t for t, d in self.claimed.items()},
                    self.titles)
        self._index_written = time.monotonic()
