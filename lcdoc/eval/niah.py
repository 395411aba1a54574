"""Needle-in-a-haystack: plant facts at each depth of a haystack cut to each length, ask through
`lcdoc ask`, score every trial, and draw the length x depth heat map."""

from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lcdoc.qa.needles import cut_to_tokens, parse_list, plant  # noqa: F401  (imported from here by callers)

CITIES = ["Tromso", "Valparaiso", "Hobart", "Windhoek", "Ushuaia", "Reykjavik", "Nuuk", "Ulaanbaatar"]
WORDS = ["amber", "cobalt", "falcon", "juniper", "lantern", "marble", "orchid", "quartz"]


@dataclass(frozen=True)
class Needle:
    fact: str
    question: str
    answer: str  # what the answer must contain


@dataclass(frozen=True)
class Trial:
    length: int  # haystack length in the model's tokens
    depth: int  # percent
    mode: str
    route: str
    rope: str  # "native" or "YaRN xF"
    needles: int
    found: int
    score: float  # found / needles
    answer: str
    seconds: float


def make_needles(n: int, seed: int) -> list[Needle]:
    rng = random.Random(seed)
    cities = rng.sample(CITIES, n)
    out = []
    for c in cities:
        code = f"{rng.choice(WORDS)}-{rng.randint(1000, 9999)}"
        out.append(Needle(f"The secret passphrase for the {c} vault is {code}.",
                          f"What is the secret passphrase for the {c} vault?", code.split("-")[1]))
    return out


def haystack_text(paths: list[str] | None, on_failure: Callable[[str, str], None] | None) -> str:
    """The user's documents joined as one haystack (each unreadable one named), or the bundled."""
    from lcdoc.errors import InputFileError
    from lcdoc.ingest import read_documents
    from lcdoc.qa.needles import default_haystack

    if not paths:
        return default_haystack()
    docs, failed = read_documents(paths)
    for x in failed:
        if on_failure:
            on_failure(x.path, x.reason)
    if not docs:
        raise InputFileError(str(paths[0]), "no readable document in the haystack")
    return "\n\n".join(d.text for d in docs)


def run_niah(
    lengths: list[int],
    depths: list[int],
    mode: str = "stuff",
    n_needles: int = 1,
    haystack_paths: list[str] | None = None,
    model: str | None = None,
    out_dir: Path = Path("niah-out"),
    settings=None,
    seed: int = 0,
    on_trial: Callable[[Trial], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    n_ctx: int | None = None,
) -> list[Trial]:
    """Every (length, depth) cell through lcdoc's ask path; writes trials.csv and trials.json.
    n_ctx: one planned context for every length and mode (YaRN past the native one), so that
    auto faces the same choice a user's plan gives it; None: each length's own, as before."""
    from lcdoc.qa.ask import ask
    from lcdoc.engine.llm import Engine, Tokenizer, resolve_model
    from lcdoc.engine.arch import read_arch
    from lcdoc.settings import Settings

    s = settings or Settings()
    s = s.replace(answer_tokens=48 if n_needles == 1 else 24 * n_needles + 24)
    path = resolve_model(model or s.model)
    native = read_arch(path).n_ctx_train
    tok = Tokenizer(path)
    text = haystack_text(haystack_paths, on_failure)
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lcdoc-niah-"))  # haystacks are scratch, not results
    trials: list[Trial] = []
    engine = None
    engine_ctx = None
    for length in lengths:
        paras = cut_to_tokens(text, length, tok.count)
        # Stuffing needs a context that holds the haystack, the prompt and the answer; beyond the
        # native context the planner scales RoPE with YaRN. Retrieval keeps the native context.
        # Paragraphs counted apart come out a few percent shorter than the stuffed whole.
        need = int(length * 1.04) + 512 + s.answer_tokens if mode == "stuff" else native
        ctx = n_ctx or (max(native, ((need + 1023) // 1024) * 1024) if mode == "stuff" else native)
        if engine is None or engine_ctx != ctx:
            if engine is not None:
                engine.close()
            engine = Engine(path, n_ctx=ctx, kv_type=s.kv_type, gpu_layers=s.gpu_layers,
                            n_threads=s.threads)
            engine_ctx = ctx
        rope = f"YaRN x{engine.plan.rope_factor:g}" if engine.plan.rope_scaling == "yarn" else "native"
        for depth in depths:
            needles = make_needles(n_needles, seed + length * 101 + depth)
            hay = work / f"haystack-{length}-{depth}.txt"
            hay.write_text(plant(paras, needles, depth))
            q = needles[0].question if n_needles == 1 else (
                "List the secret passphrases for the vaults of "
                + ", ".join(n.fact.split(" the ")[1].split(" vault")[0] for n in needles) + ".")
            t0 = time.perf_counter()
            a = ask(q, [str(hay)], mode=mode, engine=engine, settings=s)
            found = sum(nd.answer in a.answer for nd in needles)
            tr = Trial(length, depth, mode, a.route, rope, n_needles, found, found / n_needles,
                       a.answer.replace("\n", " ")[:300], time.perf_counter() - t0)
            trials.append(tr)
            if on_trial:
                on_trial(tr)
            write_trials(trials, out_dir)
    if engine is not None:
        engine.close()
    return trials


def write_trials(trials: list[Trial], out_dir: Path) -> None:
    """trials.csv (one row a trial: the heat map is drawn from it) and trials.json."""
    rows = [asdict(t) for t in trials]
    with open(out_dir / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out_dir / "trials.json").write_text(json.dumps(rows, indent=1))


def heatmap(csv_path: Path, png_path: Path, title: str) -> Path:
    """Length x depth heat map of mean score, from the CSV alone (so the CSV reproduces the plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    lengths = sorted({int(r["length"]) for r in rows})
    depths = sorted({int(r["depth"]) for r in rows})
    grid = np.full((len(depths), len(lengths)), np.nan)
    ropes = {}
    for r in rows:
        i, j = depths.index(int(r["depth"])), lengths.index(int(r["length"]))
        grid[i, j] = float(r["score"]) if np.isnan(grid[i, j]) else (grid[i, j] + float(r["score"])) / 2
        ropes[int(r["length"])] = r["rope"]
    fig, ax = plt.subplots(figsize=(1.1 * len(lengths) + 3, 0.45 * len(depths) + 2.2))
    cmap = matplotlib.colormaps["RdYlGn"]
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)))
    ax.set_xticklabels([f"{L // 1024}K" if L >= 1024 else str(L) for L in lengths])
    ax.set_yticks(range(len(depths)))
    ax.set_yticklabels([f"{d}%" for d in depths])
    ax.set_xlabel("haystack length (model tokens)" + "".join(
        f"\n{L // 1024}K: {ropes[L]}" for L in lengths if ropes[L] != "native"))
    ax.set_ylabel("needle depth")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2g}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="score (fraction of needles found)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=130)
    plt.close(fig)
    return png_path


def main(argv: list[str] | None = None) -> None:
    """`python -m lcdoc.eval.niah` for hosts without the CLI's dependencies; the CSV draws the map."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--lengths", default="1k,2k,4k")
    ap.add_argument("--depths", default="0,25,50,75,100")
    ap.add_argument("--mode", default="stuff")
    ap.add_argument("--needles", type=int, default=1)
    ap.add_argument("--out", default="niah-out")
    ap.add_argument("--index-dir", default="/tmp/lcdoc-niah-indexes")
    a = ap.parse_args(argv)
    from lcdoc.settings import Settings

    s = Settings(index_dir=Path(a.index_dir))
    out = Path(a.out)
    run_niah(parse_list(a.lengths), parse_list(a.depths), a.mode, a.needles, None, a.model, out, s,
             on_trial=lambda t: print(f"{t.length:>7} {t.depth:>3}% {t.found}/{t.needles} {t.rope} "
                                      f"{t.seconds:.1f}s {t.answer[:60]!r}", flush=True))
    try:
        heatmap(out / "trials.csv", out / "heatmap.png", f"NIAH {a.mode}")
    except ImportError:
        print("matplotlib not installed: draw the heat map from trials.csv elsewhere")


if __name__ == "__main__":
    main()
