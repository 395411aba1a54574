"""`lcdoc summarize`'s driver: walk the paths, reuse what is finished, hand the rest to a
summarizer, store each summary as it comes back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from lcdoc.events import Events
from lcdoc.errors import InputFileError, NothingToReadError, UsageError
from lcdoc.ingest import Document, load_path, walk_paths
from lcdoc.summarize.document import STYLES, Summary, whole_sentences
from lcdoc.summarize.store import SummaryStore, settings_key
from lcdoc.summarize.summarizers import Summarizer

EMPTY = "the model produced an empty summary"


@dataclass
class SummarizeReport:
    done: list[Summary] = field(default_factory=list)
    reused: list[Summary] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def summarize_paths(paths: list[str], summarizer: Summarizer, out_dir: Path | None,
                    cache_dir: Path, style: str = "brief", max_words: int = 150,
                    prompt: str | None = None, include: tuple[str, ...] = (),
                    exclude: tuple[str, ...] = (), events: Events | None = None
                    ) -> SummarizeReport:
    """Summaries for every document under the paths; finished ones are reused, failures named
    (events.failure) and the others go on."""
    events = events or Events()
    if style not in STYLES:
        raise UsageError(f"--style {style}: choose one of {', '.join(STYLES)}")
    for p in paths:
        if not Path(p).exists():
            raise InputFileError(p, "no such file or folder")
    files, skipped = walk_paths(paths, include, exclude)
    report = SummarizeReport()
    for sk in skipped:
        if sk.reason != "hidden file":
            _failed(report, events, sk.path, sk.reason)
    if not files:
        raise NothingToReadError(f"nothing to summarize in {', '.join(map(str, paths))} "
                                 f"(no readable document)")
    store = SummaryStore(cache_dir, out_dir, [Path(p) for p in paths],
                         settings_key(summarizer.model_id, style, max_words, prompt,
                                      summarizer.n_ctx))
    count = _Counter(len(files), events)

    def done(doc: Document, result: Summary | str) -> None:
        if isinstance(result, str) or not result.summary:
            _failed(report, events, doc.path, result if isinstance(result, str) else EMPTY)
            return
        s = replace(result, summary=whole_sentences(result.summary))
        store.save(s, fresh=True)
        _finished(report, events, store, count, s, reused=False)

    def pending() -> Iterator[Document]:
        for f in files:
            try:
                doc = load_path(f)
            except InputFileError as e:
                _failed(report, events, str(f), e.problem)
                continue
            found = store.find(f, doc)
            if found is not None:
                store.save(found, fresh=False)
                _finished(report, events, store, count, found, reused=True)
                continue
            yield Document(str(f), doc.text, doc.kind, doc.sha256, doc.page_starts, doc.outline)

    summarizer.run(pending(), done)
    store.write_index(report.done + report.reused, report.failed)
    if events.progress:
        events.progress("documents", len(files), len(files))
    return report


def _failed(report: SummarizeReport, events: Events, path: str, why: str) -> None:
    report.failed.append((path, why))
    events.fail(path, why)


def _finished(report: SummarizeReport, events: Events, store: SummaryStore, count: "_Counter",
              s: Summary, reused: bool) -> None:
    (report.reused if reused else report.done).append(s)
    if events.result:
        events.result(s, reused)
    store.write_index(report.done + report.reused, report.failed, now=False)
    count.add(s, reused)


class _Counter:
    """Documents finished, and the model's pace over the new ones, for the progress bar."""

    def __init__(self, total: int, events: Events) -> None:
        import time

        self.total, self.events = total, events
        self.done = self.tokens = 0
        self.started = time.perf_counter()

    def add(self, s: Summary, reused: bool) -> None:
        import time

        self.done += 1
        self.tokens += 0 if reused else s.tokens
        if self.events.progress:
            rate = self.tokens / max(1e-9, time.perf_counter() - self.started)
            self.events.progress("documents", self.done, self.total, f"{rate:,.0f} tok/s")
