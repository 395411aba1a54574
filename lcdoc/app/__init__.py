"""The application layer: what every interface calls, and the one place that decides where a
request runs.

The CLI parses its flags into a typed request (lcdoc.app.requests), calls `run`, and renders the
result; `lcdoc serve` decodes the same request and runs it on LocalApp around its resident
model. The other commands' operations are here too, so an interface needs nothing below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from lcdoc.app.requests import (AskRequest, IndexRequest, SearchRequest,  # noqa: F401
                                SearchResult, SummarizeRequest, SummarizeResult)
from lcdoc.events import Events, debug_mark  # noqa: F401
from lcdoc.settings import Settings


def run(req: Any, events: Events | None = None, no_server: bool = False, local: Any = None) -> Any:
    """The result of a request: from a running `lcdoc serve` that fits it when there is one
    (and not no_server), else from this process (local: a LocalApp holding a resident engine).
    Why a server did not answer goes to events.log."""
    from lcdoc.app.requests import SERVED

    events = events or Events()
    req.check()
    if req.op in SERVED and not no_server and local is None:
        from lcdoc.app.remote import RemoteApp

        result = getattr(RemoteApp(), req.op)(req, events)
        if result is not None:
            return result
    if local is None:
        from lcdoc.app.local import LocalApp

        local = LocalApp()
    return getattr(local, req.op)(req, events)


def local_app(engine: Any = None) -> Any:
    """A LocalApp around an engine this process keeps (a chat's), or building one per request."""
    from lcdoc.app.local import LocalApp

    return LocalApp(engine)


def index(req: IndexRequest, events: Events, on_progress: Callable | None = None) -> Any:
    """Build or update an index in this process (lcdoc.app.local.IndexResult)."""
    from lcdoc.app.local import LocalApp

    req.check()
    return LocalApp().index(req, events, on_progress)


# --- the model and its plan -----------------------------------------------------------------
def plan(s: Settings) -> tuple[Any, Any, dict, str]:
    """(the model's Arch, the Plan for this machine, the report `lcdoc plan --json` prints, with
    the effective context: calibrated or the default stuffing limit; that context in words)."""
    from lcdoc.engine.arch import read_arch
    from lcdoc.engine.llm import resolve_model
    from lcdoc.engine.plan import cache_settings, make_plan, plan_report
    from lcdoc.engine.system import probe_memory
    from lcdoc.qa.profile import stuff_limit

    arch = read_arch(resolve_model(s.model))
    p = make_plan(arch, probe_memory(s.gpu_memory_gb), s.ctx, s.kv_type, s.gpu_layers,
                  prompt_kernels=s.prompt_kernels)
    report = plan_report(arch, p)
    limit, _, prof = stuff_limit(arch.path, cache_settings(p), arch.n_ctx_train)
    report["effective"] = ({"calibrated": True, "stuff_limit": limit, "grid": prof.grid,
                            "measured_at": prof.measured_at} if prof else
                           {"calibrated": False, "stuff_limit": limit})
    return arch, p, report, (f"addressable context {p.n_ctx:,} tokens; effective (calibrated) "
                             f"{limit:,}: {prof.summary()}" if prof else
                             f"addressable context {p.n_ctx:,} tokens; effective: not calibrated, "
                             f"auto stuffs up to {limit:,} (half the native context; run lcdoc "
                             f"calibrate)")


def calibrate(s: Settings, lengths: list[int] | None, depths: tuple[int, ...], full: bool,
              on_trial: Callable | None = None) -> tuple[Any, Path]:
    """Measure the model's effective context at this plan; (the Profile, where it is stored)."""
    from lcdoc.engine.llm import Engine
    from lcdoc.qa.calibrate import calibrate as sweep
    from lcdoc.qa.profile import profile_path

    eng = Engine.from_settings(s, cache_dir=None, disk_bytes=None)
    prof = sweep(eng, s, lengths, depths, on_trial=on_trial, full=full)
    return prof, profile_path(eng.path, eng.cache_settings)


def doctor(s: Settings) -> dict:
    """name -> (ok: True / False / None for informational, detail)."""
    from lcdoc.app.doctor import run_checks

    return run_checks(s)


def parse_list(spec: str) -> list[int]:
    """'1k,2k,4k' -> [1024, 2048, 4096]."""
    from lcdoc.qa.needles import parse_list as parse

    return parse(spec)


# --- conversations, history and housekeeping -------------------------------------------------
from lcdoc.app.conversations import record, start as start_conversation  # noqa: E402,F401
from lcdoc.app.history import default_path as history_path, open_history  # noqa: E402,F401
from lcdoc.app.housekeeping import (CACHE_KINDS, cache_sizes, clear_cache,  # noqa: E402,F401
                                    drop_index, list_indexes)
