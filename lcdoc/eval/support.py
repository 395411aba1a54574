"""Precision and recall of `supported` (lcdoc/evidence.py) on a labelled set of answers.

    python -m lcdoc.eval.support [TEXT...] [--per-text 12] [--seed 0]

The set is built from real texts (Debian's licence texts by default), labelled by construction:
a *supported* answer restates a sentence of the text given (a few words dropped, its numbers and
names kept); an *unsupported* one is the same sentence with one number changed, or one name
replaced, or a sentence of another text the model was not given. Each answer is judged against
the text it came from, with the lexical rule alone (before) and with numbers and names matched
exactly (after), side by side. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

from lcdoc.qa.evidence import sentences, supported

DEFAULT = ["/usr/share/common-licenses/Apache-2.0", "/usr/share/common-licenses/GPL-3",
           "/usr/share/common-licenses/MPL-2.0", "/usr/share/common-licenses/Artistic",
           "/usr/share/common-licenses/GFDL-1.3", "/usr/share/common-licenses/LGPL-2.1"]
NAMES = ["Ottoline", "Marsh", "Hallam", "Brightwater", "Kestrel", "Penrose", "Varga", "Lindqvist"]
QUESTION = "What does the licence say?"


def _candidates(text: str) -> list[str]:
    """Sentences with a number or a name past their first word, of a readable length."""
    out = []
    for s in sentences(text):
        s = " ".join(s.split())
        words = s.split()
        if 8 <= len(words) <= 40 and (re.search(r"\d", s) or
                                      any(w[0].isupper() for w in words[1:] if w[0].isalpha())):
            out.append(s)
    return out


def _restate(s: str, rng: random.Random) -> str:
    """The sentence with a few plain words dropped: its numbers and names kept."""
    words = s.split()
    plain = [i for i, w in enumerate(words[1:], 1) if w.islower() and not any(c.isdigit() for c in w)]
    drop = set(rng.sample(plain, min(len(plain) // 5, 3)))
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def _change_number(s: str, rng: random.Random) -> str | None:
    nums = list(re.finditer(r"\d+", s))
    if not nums:
        return None
    m = rng.choice(nums)
    return s[: m.start()] + str(int(m.group()) + rng.randint(1, 7)) + s[m.end():]


def _change_name(s: str, rng: random.Random) -> str | None:
    words = s.split()
    names = [i for i, w in enumerate(words[1:], 1) if w[:1].isupper() and w.isalpha() and len(w) > 2]
    if not names:
        return None
    i = rng.choice(names)
    words[i] = rng.choice(NAMES)
    return " ".join(words)


def labelled(paths: list[str], per_text: int, seed: int) -> list[tuple[str, str, bool, str]]:
    """(answer, the text it is judged against, supported?, kind)."""
    rng = random.Random(seed)
    texts = {p: Path(p).read_text(errors="replace") for p in paths}
    items = []
    for p, text in texts.items():
        cands = _candidates(text)
        rng.shuffle(cands)
        others = [t for q, t in texts.items() if q != p]
        for s in cands[:per_text]:
            items.append((_restate(s, rng), text, True, "restated"))
            if re.search(r"\d", s):  # a number when it has one: the commonest wrong answer
                kind, changed = "number changed", _change_number(s, rng)
            else:
                kind, changed = "name replaced", _change_name(s, rng)
            if changed and changed != s:
                items.append((changed, text, False, kind))
        for s in _candidates(rng.choice(others))[: per_text // 3]:
            items.append((s, text, False, "from another text"))
    return items


def score(items, exact: bool) -> dict:
    tp = fp = fn = tn = 0
    for answer, text, label, _ in items:
        got = supported(answer, QUESTION, [text], exact=exact)
        tp += got and label
        fp += got and not label
        fn += (not got) and label
        tn += (not got) and not label
    return {"precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", default=DEFAULT)
    ap.add_argument("--per-text", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    items = labelled(a.paths, a.per_text, a.seed)
    kinds = {}
    for *_, label, kind in items:
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"labelled answers: {len(items)} ({', '.join(f'{n} {k}' for k, n in kinds.items())})")
    print(f"command: python -m lcdoc.eval.support {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print("| rule | precision | recall | supported right | unsupported let through | supported missed |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, exact in (("lexical (before)", False), ("numbers and names exact (after)", True)):
        r = score(items, exact)
        print(f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['tp']} | {r['fp']} | {r['fn']} |")
    for kind in kinds:
        sub = [x for x in items if x[3] == kind]
        before = sum(supported(x[0], QUESTION, [x[1]], exact=False) for x in sub)
        after = sum(supported(x[0], QUESTION, [x[1]], exact=True) for x in sub)
        print(f"\n{kind}: judged supported {before} of {len(sub)} before, {after} after", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
