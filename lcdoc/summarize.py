"""`lcdoc summarize`: one summary per document, stuffed when it fits, hierarchical when it does not.

Results are written as each document finishes (atomically), keyed by the document's content hash
and the summary settings, so a re-run skips finished work and an interrupted run loses at most
the document in progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from lcdoc.errors import InputFileError, LcdocError, UsageError
from lcdoc.ingest import Document, chunk_document, load_path, walk_paths

STYLES = {
    "brief": "Summarise the document in one short paragraph of at most {w} words.",
    "detailed": "Write a detailed summary of the document, section by section, in at most {w} words.",
    "bullets": "Summarise the document as 3 to 7 bullet points, at most {w} words in all.",
}
PART = "Summarise this part of a longer document in at most {w} words. Keep names, numbers and " \
       "page references."
COMBINE = "These are summaries of consecutive parts of one document, with their pages. " \
          "Combine them into one summary of at most {w} words. Keep page references like (p. 3)."


# Documents handed to the side-by-side decoder at once, in multiples of --parallel: enough that a
# finished stream takes the next document at once (continuous refill), few enough to hold loaded.
BATCH_GROUPS = 8
# index.md is rewritten at most this often during a run (and once at the end): rewriting it after
# every document made a folder of N documents cost O(N^2) writes.
INDEX_EVERY_S = 10.0


@dataclass(frozen=True)
class Summary:
    """One document's summary and what it took (one JSON line of `--json`)."""

    path: str
    summary: str
    route: str  # stuff or map-reduce
    chunks: int  # leaf parts summarised (1 when stuffed)
    tokens: int  # the document's length in the model's tokens
    seconds: float
    levels: int = 1
    sha256: str = ""

    def as_json(self) -> dict:
        d = asdict(self)
        d.pop("sha256")
        d["seconds"] = round(self.seconds, 2)
        return d


@dataclass
class SummarizeReport:
    done: list[Summary] = field(default_factory=list)
    reused: list[Summary] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _labelled(doc: Document, start: int, end: int) -> str:
    """Text of [start, end) with page markers, so summaries can cite pages."""
    if not doc.page_starts:
        return doc.text[start:end]
    first, last = doc.page_at(start), doc.page_at(max(start, end - 1))
    parts = []
    for p in range(first, last + 1):
        a = max(start, doc.page_starts[p - 1])
        b = min(end, doc.page_starts[p] if p < doc.n_pages else len(doc.text))
        parts.append(f"[page {p}]\n{doc.text[a:b].strip()}")
    return "\n\n".join(parts)


def _request(engine, system: str, context: str, question: str, max_tokens: int):
    from lcdoc.engine.parallel import Request

    pre, suf, stops = engine.chat_parts(system, context, question)
    a, b = engine.prompt_tokens(pre, suf)
    return Request(a + b, max_tokens, tuple(stops))


def summarize_document(
    doc: Document,
    engine,
    style: str = "brief",
    max_words: int = 150,
    prompt: str | None = None,
    on_level: Callable[[str], None] | None = None,
    decoder=None,
) -> Summary:
    """Summary of one document: stuffed if it fits the plan's context, else map-reduce by level.

    With a ParallelDecoder, the parts of a level are decoded side by side.
    """
    from lcdoc.engine.parallel import run_many

    t0 = time.perf_counter()
    instruction = prompt or STYLES[style].format(w=max_words)
    answer_tokens = int(max_words * 1.6) + 32
    pre0, suf0, _ = engine.chat_parts(instruction, "", instruction)
    budget = engine.n_ctx - engine.count(pre0 + suf0) - answer_tokens - 64
    whole = _labelled(doc, 0, len(doc.text))
    n_tok = engine.count(whole)

    def run(system: str, context: str, question: str, max_tokens: int) -> str:
        return run_many(engine, decoder, [_request(engine, system, context, question, max_tokens)])[0]

    def run_all(items: list[tuple[str, str, int]]) -> list[str]:
        """(system, context, max_tokens) each, the system text doubling as the question."""
        return run_many(engine, decoder, [_request(engine, sy, cx, sy, mt) for sy, cx, mt in items])

    if n_tok <= budget:
        text = run(instruction, whole, instruction, answer_tokens)
        return Summary(doc.path, text, "stuff", 1, n_tok, time.perf_counter() - t0, 1, doc.sha256)

    # Map: section-aware parts of about half the budget (room for the prompt and the answer).
    part_budget = max(256, budget // 2)
    part_words = max(40, max_words // 2)

    def count_many(texts):
        return [engine.count(t) for t in texts]

    parts = chunk_document(doc, part_budget, 0, count_tokens=count_many)
    texts = run_all([(PART.format(w=part_words), _labelled(doc, c.start, c.end),
                      int(part_words * 1.6) + 32) for c in parts])
    level_notes = [(c.pages or f"part {c.ordinal + 1}", t) for c, t in zip(parts, texts)]
    if on_level:
        on_level(f"{doc.path}: level 1, {len(parts)} parts summarised")
    levels = 1
    # Reduce: combine neighbouring summaries, level by level, until they fit one context.
    while True:
        joined = "\n\n".join(f"({lab}) {s}" for lab, s in level_notes)
        if engine.count(joined) <= budget or len(level_notes) == 1:
            break
        levels += 1
        groups, cur, size = [], [], 0
        for lab, s in level_notes:
            n = engine.count(s) + 16
            if cur and size + n > budget:
                groups.append(cur)
                cur, size = [], 0
            cur.append((lab, s))
            size += n
        groups.append(cur)
        if len(groups) == len(level_notes):  # no grouping possible: force pairs
            groups = [level_notes[i : i + 2] for i in range(0, len(level_notes), 2)]
        merged = run_all([(COMBINE.format(w=part_words),
                           "\n\n".join(f"({lab}) {s}" for lab, s in g), int(part_words * 1.6) + 32)
                          for g in groups])
        level_notes = [
            (f"{g[0][0].split('-')[0]}-{g[-1][0].split('-')[-1]}" if len(g) > 1 else g[0][0], m)
            for g, m in zip(groups, merged)
        ]
        if on_level:
            on_level(f"{doc.path}: level {levels}, {len(level_notes)} summaries")
    joined = "\n\n".join(f"({lab}) {s}" for lab, s in level_notes)
    final = run(instruction + " Cite pages like (p. 3) where the parts give them.", joined,
                instruction, answer_tokens)
    return Summary(doc.path, final, "map-reduce", len(parts), n_tok, time.perf_counter() - t0,
                   levels + 1, doc.sha256)


def settings_key(model_id: str, style: str, max_words: int, prompt: str | None, n_ctx: int) -> str:
    """What, besides the document, decides a summary: a changed setting redoes it."""
    raw = json.dumps([model_id, style, max_words, prompt, n_ctx])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _atomic_write(path: Path, text: str) -> None:
    """A summary is document text: 0600, in folders made 0700 (lcdoc.private)."""
    from lcdoc.private import private_dir, write_private

    private_dir(path.parent)
    write_private(path, text, errors="backslashreplace")  # a non-UTF-8 file name


def whole_sentences(text: str) -> str:
    """The text without a last sentence cut off by the token limit: it ends at the last full
    sentence (or the last whole line of a list); only a text with neither is kept, marked "…"."""
    text = text.rstrip()
    if not text or re.search(r"[.!?…:;)\]\"'»”’]$", text):
        return text
    ends = [m.end() for m in re.finditer(r"[.!?…][\"'»”’)\]]*(?=\s)", text)]
    line = text.rfind("\n")
    cut = max(ends[-1] if ends else -1, line)
    return text[:cut].rstrip() if cut > 0 else text + "…"


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


def summarize_paths(
    paths: list[str],
    engine,
    out_dir: Path | None,
    cache_dir: Path,
    style: str = "brief",
    max_words: int = 150,
    prompt: str | None = None,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    on_result: Callable[[Summary, bool], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    on_level: Callable[[str], None] | None = None,
    on_progress: Callable[..., None] | None = None,
    parallel: int = 1,
    remote=None,
) -> SummarizeReport:
    """Summaries for every document under the paths; finished ones are reused, failures reported.

    With parallel > 1, documents that fit the context are decoded side by side, `parallel` at a
    time, in one llama.cpp context; longer ones run their map steps side by side. With remote
    (lcdoc.cluster's RaySummarizer, whose model_id and n_ctx stand in for the engine's), the
    documents to summarise are done by the cluster's workers and written here as they return.
    """
    if style not in STYLES:
        raise UsageError(f"--style {style}: choose one of {', '.join(STYLES)}")
    for p in paths:
        if not Path(p).exists():
            raise InputFileError(p, "no such file or folder")
    files, skipped = walk_paths(paths, include, exclude)
    report = SummarizeReport()
    for sk in skipped:
        if sk.reason != "hidden file":
            report.failed.append((sk.path, sk.reason))
            if on_failure:
                on_failure(sk.path, sk.reason)
    if not files:
        from lcdoc.errors import NothingToReadError

        raise NothingToReadError(f"nothing to summarize in {', '.join(map(str, paths))} "
                                 f"(no readable document)")
    key = settings_key(engine.model_id, style, max_words, prompt, engine.n_ctx)
    roots = [Path(p) for p in paths]

    claimed: dict[Path, str] = {}  # output file -> the document it belongs to, in this run
    titles: dict[str, str] = {}  # document -> its own title, for index.md

    def out_path(f: Path) -> Path:
        """Mirror of the folders; two documents that would share a file name get the second a
        short hash of its path, so no summary overwrites another's."""
        base = out_dir / (f.name + ".md")
        for r in roots:
            if r.is_dir() and (r == f or r in f.parents):
                base = out_dir / f.relative_to(r).with_suffix(f.suffix + ".md")
                break
        target = base
        if claimed.setdefault(target, str(f)) != str(f):
            tag = hashlib.sha256(os.fsencode(os.path.realpath(f))).hexdigest()[:8]
            target = base.with_name(f"{base.name[:-3]}.{tag}.md")
            claimed[target] = str(f)
        return target

    decoder = None
    parallel = max(1, min(parallel, engine.plan.n_seq))  # what the engine's context was planned for
    if parallel > 1:
        from lcdoc.engine.parallel import ParallelDecoder

        decoder = ParallelDecoder(engine, parallel)
    instruction = prompt or STYLES[style].format(w=max_words)
    answer_tokens = int(max_words * 1.6) + 32
    per_seq = 0
    if decoder is not None:
        pre0, suf0, _ = engine.chat_parts(instruction, "", instruction)
        per_seq = engine.n_ctx - engine.count(pre0 + suf0) - answer_tokens - 64  # per sequence
    done_count = 0
    index_written = [time.monotonic()]
    started = time.perf_counter()
    tokens_done = 0

    def finish(f: Path, s: Summary, reused: bool, cache_file: Path | None) -> None:
        nonlocal done_count, tokens_done
        if not reused:
            s = replace(s, summary=whole_sentences(s.summary))
        target = out_path(f) if out_dir else None
        if not reused:
            _atomic_write(cache_file, json.dumps({**s.as_json(), "levels": s.levels}))
        if target:
            prior = _read_md(target) if target.exists() else None
            if not (prior and prior[0].get("sha256") == s.sha256 and prior[0].get("settings") == key):
                _atomic_write(target, _md(s, key))
        (report.reused if reused else report.done).append(s)
        if on_result:
            on_result(s, reused)
        if out_dir and time.monotonic() - index_written[0] > INDEX_EVERY_S:
            write_index(out_dir, report.done + report.reused, report.failed,
                        {d: t for t, d in claimed.items()}, titles)
            index_written[0] = time.monotonic()
        done_count += 1
        if not reused:
            tokens_done += s.tokens
        if on_progress:
            rate = tokens_done / max(1e-9, time.perf_counter() - started)
            on_progress("documents", done_count, len(files), f"{rate:,.0f} tok/s")

    batch: list[tuple[Path, Document, Path, int]] = []
    jobs: list[tuple[Path, Document, Path]] = []

    def settle(f: Path, s: Summary, cache_file: Path) -> None:
        if not s.summary:
            report.failed.append((str(f), "the model produced an empty summary"))
            if on_failure:
                on_failure(str(f), "the model produced an empty summary")
            return
        finish(f, s, False, cache_file)

    def flush_batch() -> None:
        from lcdoc.engine.parallel import run_many

        if not batch:
            return
        last = [time.perf_counter()]  # each document is charged the time since the previous finished
        requests = [_request(engine, instruction, _labelled(d, 0, len(d.text)), instruction,
                             answer_tokens) for _, d, _, _ in batch]

        def done(i: int, text: str) -> None:  # written as each finishes: a kill loses only those in flight
            f, d, cache_file, n_tok = batch[i]
            if not text:
                report.failed.append((str(f), "the model produced an empty summary"))
                if on_failure:
                    on_failure(str(f), "the model produced an empty summary")
                return
            now = time.perf_counter()
            secs, last[0] = now - last[0], now
            finish(f, Summary(str(f), text, "stuff", 1, n_tok, secs, 1, d.sha256), False, cache_file)

        run_many(engine, decoder, requests, on_done=done)
        batch.clear()

    try:
        for f in files:
            try:
                doc = load_path(f)
            except InputFileError as e:
                report.failed.append((str(f), e.problem))
                if on_failure:
                    on_failure(str(f), e.problem)
                continue
            titles[str(f)] = document_title(doc)
            cache_file = cache_dir / f"{doc.sha256[:32]}-{key}.json"
            target = out_path(f) if out_dir else None
            prior = _read_md(target) if target and target.exists() else None
            if prior and prior[0].get("sha256") == doc.sha256 and prior[0].get("settings") == key:
                m = prior[0]
                finish(f, Summary(str(f), _md_summary(m, prior[1]), m["route"], m["chunks"], m["tokens"],
                                  m["seconds"], m.get("levels", 1), doc.sha256), True, None)
                continue
            if cache_file.exists():
                m = json.loads(cache_file.read_text())
                finish(f, Summary(str(f), m["summary"], m["route"], m["chunks"], m["tokens"],
                                  m["seconds"], m.get("levels", 1), doc.sha256), True, None)
                continue
            doc = Document(str(f), doc.text, doc.kind, doc.sha256, doc.page_starts, doc.outline)
            if decoder is not None:
                n_tok = engine.count(_labelled(doc, 0, len(doc.text)))
                if n_tok <= per_seq:
                    batch.append((f, doc, cache_file, n_tok))
                    if len(batch) == BATCH_GROUPS * parallel:
                        flush_batch()
                    continue
            if remote is not None:  # done by the cluster's workers, written below
                jobs.append((f, doc, cache_file))
                continue
            try:
                s = summarize_document(doc, engine, style, max_words, prompt, on_level, decoder)
            except Exception as e:  # one document's failure is named; the others go on
                why = str(e) if isinstance(e, LcdocError) else f"{type(e).__name__}: {e}"
                report.failed.append((str(f), why))
                if on_failure:
                    on_failure(str(f), why)
                continue
            settle(f, s, cache_file)
        flush_batch()
        if jobs:
            for i, result in remote.summaries([d for _, d, _ in jobs]):
                f, _, cache_file = jobs[i]
                if isinstance(result, str):  # the worker named the problem
                    report.failed.append((str(f), result))
                    if on_failure:
                        on_failure(str(f), result)
                else:
                    settle(f, result, cache_file)
    finally:
        if decoder is not None:
            decoder.close()
    if out_dir:
        write_index(out_dir, report.done + report.reused, report.failed,
                        {d: t for t, d in claimed.items()}, titles)
    if on_progress:
        on_progress("documents", len(files), len(files))
    return report


def _first_sentence(text: str) -> str:
    """The summary's first whole sentence, its own Markdown headings and bullets left out."""
    from lcdoc.evidence import first_sentence

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


def digest(summaries: list[Summary], engine, max_words: int = 250) -> str:
    """One summary of the summaries, citing documents as [n]."""
    numbered = "\n\n".join(f"[{i}] {s.path}\n{s.summary}" for i, s in enumerate(summaries, 1))
    instruction = (f"These are summaries of the documents in a folder. Write one overview of at "
                   f"most {max_words} words, citing documents as [n].")
    pre, suf, stops = engine.chat_parts(instruction, numbered, instruction)
    budget = engine.n_ctx - int(max_words * 1.6) - 64
    if engine.count(pre + suf) > budget and len(summaries) == 1:  # one alone too long: cut it
        s = summaries[0]
        keep = int(len(s.summary) * budget / (engine.count(pre + suf) + 1) * 0.9)
        return digest([Summary(s.path, s.summary[:keep], s.route, 0, 0, 0.0)], engine, max_words) \
            if keep > 0 else ""
    if engine.count(pre + suf) > budget:  # too many: digest in groups, then the digests
        half = len(summaries) // 2
        parts = [digest(summaries[:half], engine, max_words), digest(summaries[half:], engine, max_words)]
        return digest([Summary(f"part {i + 1}", p, "digest", 0, 0, 0.0) for i, p in enumerate(parts)],
                      engine, max_words)
    return engine.complete(pre, suf, max_tokens=int(max_words * 1.6) + 32, stop=stops,
                           cache_prefix=False).text.strip()
