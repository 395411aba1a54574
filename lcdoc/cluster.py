"""Work shared out to Ray actors (`--ray ADDRESS`): each loads its model once and keeps it.

Ray is an optional extra (`pip install "lcdoc[ray]"`), imported only here. The driver keeps every
write (summary files, SQLite, FAISS) to itself, so outputs are those of a local run; actors only
compute. An item whose actor dies is put back in the queue and done by another (or by the same
actor once Ray restarts it), and its result is written once, when it arrives.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from lcdoc.errors import LcdocError, UsageError

RETRIES = 3  # an item whose actor dies this many times is reported as failed


class ClusterError(LcdocError):
    """The Ray cluster could not be reached or gave up on an item."""


def connect(address: str):
    """ray, initialised against ADDRESS ('auto': the cluster `ray start` made on this machine;
    'local': a new one-machine cluster for this run)."""
    try:
        import ray
    except ImportError as e:
        raise UsageError('--ray needs Ray: pip install "lcdoc[ray]" (or pip install ray)') from e
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        # As `ray start` does: a token in ~/.ray/auth_token means the cluster expects it.
        if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
            os.environ["RAY_AUTH_MODE"] = "token"
        try:
            import logging

            ray.init(address=None if address == "local" else address, log_to_driver=False,
                     logging_level=logging.WARNING,
                     include_dashboard=False, ignore_reinit_error=True,
                     runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                               if k.startswith(("LCDOC_", "HF_HUB_OFFLINE"))}})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"--ray {address}: could not connect to a Ray cluster ({e})") from e
    return ray


def default_workers(ray, gpus: bool) -> int:
    """One actor per GPU on a GPU cluster, else one per CPU."""
    res = ray.cluster_resources()
    return max(1, int(res.get("GPU", 0) if gpus else res.get("CPU", 1)))


class ActorPool:
    """N actors of one class; `map_unordered` keeps each busy with one item at a time."""

    def __init__(self, ray, cls: type, n: int, args: tuple = (), gpus: bool = False) -> None:
        self.ray = ray
        remote = ray.remote(cls).options(num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=-1)
        self.actors = [remote.remote(*args) for _ in range(n)]

    def call_one(self, method: str, *args: Any) -> Any:
        return self.ray.get(getattr(self.actors[0], method).remote(*args))

    def map_unordered(self, method: str, items: list, on_retry: Callable[[int, str], None] | None = None
                      ) -> Iterator[tuple[int, Any]]:
        """(index, result) as each item finishes; an item whose actor died is queued again."""
        from ray.exceptions import RayActorError, RayTaskError

        queue = deque(range(len(items)))
        tries = [0] * len(items)
        idle = list(self.actors)
        busy: dict = {}
        while queue or busy:
            while queue and idle:
                actor, i = idle.pop(), queue.popleft()
                busy[getattr(actor, method).remote(items[i])] = (actor, i)
            ready, _ = self.ray.wait(list(busy), num_returns=1)
            actor, i = busy.pop(ready[0])
            idle.append(actor)  # a dead actor is restarted by Ray (max_restarts=-1)
            try:
                result = self.ray.get(ready[0])
            except RayActorError as e:
                tries[i] += 1
                if tries[i] >= RETRIES:
                    raise ClusterError(f"item {i}: its worker died {tries[i]} times") from e
                if on_retry:
                    on_retry(i, "its worker died; queued again")
                queue.append(i)
                continue
            except RayTaskError as e:
                raise ClusterError(f"a worker failed: {e}") from e
            yield i, result

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:
                pass


# --- summarize --------------------------------------------------------------------------
class SummarizeWorker:
    """A Ray actor: the model loaded once; one document at a time, as a local run would."""

    def __init__(self, engine_args: dict, options: dict) -> None:
        from lcdoc.engine.llm import Engine

        self.engine = Engine(**engine_args)
        self.options = options

    def identity(self) -> dict:
        return {"model_id": self.engine.model_id, "n_ctx": self.engine.n_ctx}

    def summarize(self, doc):
        from lcdoc.summarize import summarize_document

        try:
            return summarize_document(doc, self.engine, **self.options)
        except Exception as e:  # named by the driver, as a local run names it
            return str(e) if isinstance(e, LcdocError) else f"{type(e).__name__}: {e}"


class RaySummarizer:
    """A summarizer (lcdoc.summarize.Summarizer) whose documents are summarised by actors on a
    Ray cluster, each with the model loaded once; results come back as each finishes."""

    def __init__(self, address: str, engine_args: dict, options: dict, workers: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.ray = connect(address)
        gpus = bool(self.ray.cluster_resources().get("GPU"))
        n = workers or default_workers(self.ray, gpus)
        self.pool = ActorPool(self.ray, SummarizeWorker, n, (engine_args, options), gpus)
        who = self.pool.call_one("identity")
        self.model_id, self.n_ctx = who["model_id"], who["n_ctx"]
        self.log = log
        if log:
            log(f"Ray: {n} summarize worker(s) on {address}" + (" (one GPU each)" if gpus else ""))

    def run(self, docs: Iterable, done: Callable[[Any, Any], None]) -> None:
        """Every document to the workers at once; done(document, Summary or its problem)."""
        docs = list(docs)

        def retry(i: int, why: str) -> None:
            if self.log:
                self.log(f"{docs[i].path}: {why}")

        for i, result in self.pool.map_unordered("summarize", docs, retry):
            done(docs[i], result)

    def close(self) -> None:
        self.pool.close()


# --- index ------------------------------------------------------------------------------
class EmbedWorker:
    """A Ray actor: the embedding model loaded once, at the index's precision."""

    def __init__(self, model_dir: str | None, precision: str, runtime: str | None = None) -> None:
        from lcdoc.index.embed import get_embedder

        self.embedder = get_embedder(model_dir, precision, True, runtime)

    def identity(self) -> dict:
        e = self.embedder
        return {"name": e.name, "dim": e.dim, "precision": e.precision}

    def embed(self, texts: list[str]):
        return self.embedder.embed(texts)


class RayEmbedder:
    """The embedder interface (name, dim, precision, embed) over a pool of Ray actors: a batch
    is cut into one part per actor and the parts are embedded at once."""

    PART = 64  # texts per task: small enough to spread a batch, large enough to batch well

    def __init__(self, address: str, model_dir: str | None, precision: str,
                 workers: int | None = None, runtime: str | None = None) -> None:
        self.ray = connect(address)
        gpus = bool(self.ray.cluster_resources().get("GPU"))
        n = workers or default_workers(self.ray, gpus)
        self.pool = ActorPool(self.ray, EmbedWorker, n, (model_dir, precision, runtime), gpus)
        who = self.pool.call_one("identity")
        self.name, self.dim, self.precision = who["name"], who["dim"], who["precision"]
        self.workers = n

    def embed(self, texts, on_batch: Callable[[int], None] | None = None):
        import numpy as np

        parts = [list(texts[i : i + self.PART]) for i in range(0, len(texts), self.PART)]
        out: list = [None] * len(parts)
        for i, vecs in self.pool.map_unordered("embed", parts):
            out[i] = vecs
            if on_batch:
                on_batch(len(parts[i]))
        return np.vstack(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def close(self) -> None:
        self.pool.close()
