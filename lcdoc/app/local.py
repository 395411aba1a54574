"""The application in this process: each request run by the library, with the engine, the
stuffing limit, the parallel policy, the digest and the Ray workers decided here, once.

`lcdoc serve` runs this same class around its resident engine; the CLI runs it when no server
answers (lcdoc.app.run).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcdoc.app.requests import (AskRequest, IndexRequest, SearchRequest, SearchResult,
                                SummarizeRequest, SummarizeResult)
from lcdoc.events import Events, debug_mark
from lcdoc.settings import Settings

# Documents summarised side by side on a GPU when --parallel is not given: 4 sequences cost four
# contexts' cache and gave 3.0x the documents per hour on the H100 (docs/benchmarks.md); on a CPU
# the cores are busy with one.
GPU_PARALLEL = 4


def default_parallel(s: Settings) -> int:
    """Sequences side by side for summarize when not asked: GPU_PARALLEL on a GPU, else 1."""
    from lcdoc.engine.system import probe_memory

    return GPU_PARALLEL if probe_memory(s.gpu_memory_gb).on_gpu and s.gpu_layers != 0 else 1


@dataclass(frozen=True)
class IndexResult:
    """An `lcdoc index` run: its report (lcdoc.index.IndexReport) and what the index holds now."""

    folder: str
    report: Any
    total: dict

    def as_json(self) -> dict:
        r = self.report
        return {"index": self.folder, "files_seen": r.files_seen, "indexed": r.indexed,
                "unchanged": r.unchanged, "removed": r.removed, "pages": r.pages,
                "chunks": r.chunks, "tokens": r.tokens, "seconds": round(r.seconds, 3),
                "vector_index": r.vector_index, "total": self.total,
                "failed": [{"path": f.path, "reason": f.reason} for f in r.failed],
                "skipped": [{"path": f.path, "reason": f.reason} for f in r.skipped],
                "kept": [{"path": f.path, "reason": f.reason} for f in r.kept],
                "removed_paths": r.removed_paths}


class LocalApp:
    """Requests run here. engine: a resident one (the server's, a chat's) used for every request;
    None builds one from each request's settings. serving: results are marked as the server's."""

    def __init__(self, engine=None, serving: bool = False) -> None:
        self.engine = engine
        self.serving = serving

    def ask(self, req: AskRequest, events: Events):
        from lcdoc.qa.ask import ask

        ans = ask(req.question, list(req.paths), req.index, req.mode, engine=self.engine,
                  settings=req.settings, on_text=events.text if req.stream else None,
                  on_route=events.route, stdin_data=req.stdin, history=list(req.history))
        return dataclasses.replace(ans, server=True) if self.serving else ans

    def search(self, req: SearchRequest, events: Events) -> SearchResult:
        from lcdoc.index import Index

        with Index.from_settings(req.index, req.settings) as idx:
            hits = idx.require_documents().search(req.query, k=req.k, mode=req.mode)  # type: ignore[arg-type]
        return SearchResult(tuple(hits), self.serving)

    def summarize(self, req: SummarizeRequest, events: Events) -> SummarizeResult:
        from lcdoc.summarize import LocalSummarizer, digest, summarize_paths

        s = req.settings
        summarizer, engine, parallel = self._summarizer(req, events)
        debug_mark("summarizer ready")
        try:
            rep = summarize_paths(list(req.paths), summarizer, Path(req.out) if req.out else None,
                                  s.index_dir / ".summaries", req.style, req.max_words, req.prompt,
                                  req.include, req.exclude, events)
        finally:
            if not isinstance(summarizer, LocalSummarizer):
                summarizer.close()
        everything = rep.done + rep.reused
        text = digest(everything, engine) if req.digest and everything and engine else None
        return SummarizeResult(tuple(rep.done), tuple(rep.reused), tuple(rep.failed), parallel,
                               text, self.serving)

    def _summarizer(self, req: SummarizeRequest, events: Events):
        """(the summarizer, the engine in this process or None, documents side by side)."""
        from lcdoc.summarize import LocalSummarizer

        s = req.settings
        if req.ray:
            from lcdoc.cluster import RaySummarizer

            engine_args = dict(model=str(s.model) if s.model else None, n_ctx=s.ctx,
                               kv_type=s.kv_type, gpu_layers=s.gpu_layers, n_threads=s.threads,
                               gpu_memory_gb=s.gpu_memory_gb, prompt_kernels=s.prompt_kernels)
            options = dict(style=req.style, max_words=req.max_words, prompt=req.prompt)
            return RaySummarizer(req.ray, engine_args, options, req.workers, events.log), None, 1
        engine = self.engine
        if engine is None:
            from lcdoc.engine.llm import Engine

            parallel = req.parallel or default_parallel(s)
            engine = Engine.from_settings(s, cache_dir=None, disk_bytes=None, n_seq=parallel)
        else:  # resident: at most the sequences it was started with; the batch reuses its cells
            parallel = min(req.parallel or engine.plan.n_seq, engine.plan.n_seq)
            engine.forget_resident()
        return (LocalSummarizer(engine, req.style, req.max_words, req.prompt, parallel,
                                events.log), engine, parallel)

    def index(self, req: IndexRequest, events: Events, on_progress=None) -> IndexResult:
        """Build or update the index; an index that was new and read nothing is not left behind
        (the caller names the failures, then IndexResult.require_documents says so)."""
        from lcdoc.index import update_index
        from lcdoc.index.index import index_path

        s = req.settings
        existed = (index_path(req.index, s.index_dir, allow_path=False) / "index.sqlite").exists()
        from lcdoc.index import Index

        idx = Index.from_settings(req.index, s, create=True)
        try:
            rep = update_index(idx, list(req.paths), req.include, req.exclude,
                               int(s.max_file_mb * 2**20), s.chunk_tokens, s.chunk_overlap,
                               on_progress=on_progress, embed_with=self._embed_with(req, events),
                               follow_links=req.follow_links)
        except KeyboardInterrupt:
            events.say(f"interrupted: {idx.folder} keeps every batch committed before the "
                       f"interrupt")
            raise
        total = idx.store.counts()
        if not rep.ok and not existed and not total["documents"]:
            idx.close()
            shutil.rmtree(idx.folder, ignore_errors=True)
        return IndexResult(str(idx.folder), rep, total)

    @staticmethod
    def _embed_with(req: IndexRequest, events: Events):
        if not req.ray:
            return None
        from lcdoc.cluster import RayEmbedder

        def embed_with(ix):
            model = ix._embed_model()
            emb = RayEmbedder(req.ray, str(model) if model else None, ix.embed_precision(),
                              req.workers, req.settings.embed_runtime)
            events.say(f"Ray: {emb.workers} embedding worker(s) on {req.ray}")
            return emb
        return embed_with

