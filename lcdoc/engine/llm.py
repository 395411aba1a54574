"""The one object that owns a llama.cpp model: its plan, tokenizer, chat template and prompt cache."""

from __future__ import annotations

import atexit
import dataclasses
import os
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from lcdoc.engine.arch import Arch, read_arch
from lcdoc.engine.cache import PromptCache, Snapshot, prefix_key
from lcdoc.engine.plan import KERNEL_ENV, Plan, make_plan
from lcdoc.engine.plan import cache_settings
from lcdoc.engine.system import probe_memory
from lcdoc.errors import Cancelled, DoesNotFitError, ModelMissingError
from lcdoc.events import debug_mark

SENTINEL = "\u2063LCDOC_QUESTION\u2063"


def resolve_model(model: str | Path | None) -> Path:
    """The model file given (the model setting: --model, LCDOC_MODEL or the config), else the
    packaged SmolLM2; checked to be a GGUF file."""
    from lcdoc.models import find_packaged_gguf

    path = Path(model).expanduser() if model else find_packaged_gguf()
    if not path.is_file():
        raise ModelMissingError(f"model not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelMissingError(f"{path}: not a GGUF model file")
    return path


@contextmanager
def quiet_native_stderr():
    """Silence llama.cpp's C-level log lines that bypass verbose=False."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(devnull)


_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


@atexit.register
def _close_models() -> None:
    """Free every llama.cpp model while its library is still loaded: left to the interpreter's
    teardown, Llama.__del__ finds the library's functions gone and prints a traceback."""
    for llm in list(_LIVE):
        try:
            llm.close()
        except Exception:  # noqa: BLE001 - at exit, nothing is left to tell
            pass


@lru_cache(maxsize=4)
def _vocab(path: str):
    from llama_cpp import Llama

    with quiet_native_stderr():
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
    _LIVE.add(llm)
    _VOCAB_LOADED.add(path)
    return llm


_VOCAB_LOADED: set[str] = set()  # paths whose vocab-only Llama _vocab holds


COUNT_MEMO_CHARS = 20_000
_COUNTS: dict[tuple[str, int, int], int] = {}  # (model, length, hash) of a long text -> count
_MODELS_LOADED = 0  # engines loaded in this process (fast_exit_wanted)
_ENGINES: "weakref.WeakSet[Any]" = weakref.WeakSet()  # those still alive (finish_writes)


def finish_writes() -> None:
    """Wait for every engine's background prompt-cache writes (before an exit that skips the
    interpreter's teardown)."""
    for eng in list(_ENGINES):
        cache = getattr(eng, "cache", None)
        if cache is not None:
            cache.wait()


def fast_exit_wanted() -> bool:
    """Whether a model was loaded here: freeing its memory (and a GPU's CUDA context) and the
    interpreter's teardown of torch and llama.cpp cost a few tenths of a second at exit, which a
    process about to end need not pay (lcdoc.cli)."""
    return _MODELS_LOADED > 0


class Tokenizer:
    """The model's own tokenizer from a vocab-only load: exact counts in milliseconds."""

    def __init__(self, model_path: Path) -> None:
        self.llm = _vocab(str(model_path))

    @classmethod
    def loaded(cls, model_path: Path) -> "Tokenizer | None":
        """The vocab-only tokenizer of this model if this process has loaded it already."""
        return cls(model_path) if str(model_path) in _VOCAB_LOADED else None

    @classmethod
    def of(cls, llm) -> "Tokenizer":
        """A tokenizer over a model already loaded whole (the same vocabulary)."""
        tok = cls.__new__(cls)
        tok.llm = llm
        return tok

    @property
    def n_ctx_train(self) -> int:
        """The trained context from the GGUF's metadata (a vocab-only load has no hparams)."""
        meta = self.llm.metadata
        try:
            return int(meta.get(f"{meta.get('general.architecture')}.context_length", 0))
        except ValueError:
            return 0

    def encode(self, text: str, bos: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8", errors="replace"), add_bos=bos, special=True)

    def count(self, text: str) -> int:
        """Tokens in text; a long document's count is remembered (it is counted while the
        model loads, then asked for again by the route)."""
        if len(text) < COUNT_MEMO_CHARS:
            return self._count(text)
        key = (str(getattr(self.llm, "model_path", "")), len(text), hash(text))
        if key not in _COUNTS:
            if len(_COUNTS) >= 256:
                _COUNTS.clear()
            _COUNTS[key] = self._count(text)
        return _COUNTS[key]

    def _count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8", errors="replace"), add_bos=False,
                                     special=False))

    def decode(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def tokenize_prefix_ahead(self, system: str, context: str) -> None:
        """Tokenize the prompt prefix a stuffed question will use (system and documents, no
        conversation) while the model loads; Engine.prompt_tokens takes it instead of tokenizing
        the same text again."""
        pre = chat_parts(self.llm, system, context, "")[0]
        if len(_PREFIX_TOKENS) >= 4:
            _PREFIX_TOKENS.clear()
        _PREFIX_TOKENS[_text_key(pre)] = self.llm.tokenize(
            pre.encode("utf-8", errors="replace"), add_bos=add_bos(self.llm), special=True)


# A small model greedy-decoding can fall into a loop, repeating a sentence until max_tokens. A
# span this long that the answer already contains verbatim is taken for one: generation stops and
# the repeat is cut. Prose rarely repeats 64 characters exactly; lists and code may, rarely.
REPEAT_SPAN = 64


def repeat_start(text: str, span: int = REPEAT_SPAN) -> int:
    """Where the answer's tail starts repeating an earlier span of itself verbatim, or -1."""
    if len(text) < 2 * span:
        return -1
    cut = len(text) - span
    p = text.find(text[cut:], 0, cut)
    if p < 0:
        return -1
    while p > 0 and text[p - 1] == text[cut - 1]:  # back to where the repeat began
        p, cut = p - 1, cut - 1
    return cut


@dataclass(frozen=True)
class Completion:
    """A generated answer and what it cost."""

    text: str
    n_prompt: int
    n_completion: int
    n_cached: int  # prompt tokens restored from the prompt cache instead of prefilled
    prefill_s: float  # prompt evaluation up to the first token (time to first token)
    generate_s: float
    finish_reason: str
    tokenize_s: float = 0.0  # turning the prompt's text into tokens
    save_s: float = 0.0  # states copied out for the prompt cache before the answer could start


class RefusedState(Exception):
    """llama.cpp would not take a cached state back (another build, a damaged file)."""


KV_UNIFIED_ENV = "LCDOC_KV_UNIFIED"


def kv_unified() -> bool:
    """Whether side-by-side sequences share one cache (LCDOC_KV_UNIFIED=1) or get a stream each."""
    return os.environ.get(KV_UNIFIED_ENV, "0") not in ("", "0", "false", "no")


@contextmanager
def _context_defaults(**fields: Any):
    """llama-cpp-python's Llama() has no n_seq_max or kv_unified argument: set its defaults."""
    import llama_cpp.llama_cpp as raw

    orig = raw.llama_context_default_params

    def patched():
        params = orig()
        for k, v in fields.items():
            setattr(params, k, v)
        return params

    raw.llama_context_default_params = patched
    try:
        yield
    finally:
        raw.llama_context_default_params = orig



def _no_eos(llm):
    """A logits processor that never lets the model end (benchmarks forcing a length)."""
    from llama_cpp import LogitsProcessorList

    eos = llm.token_eos()

    def no_eos(_ids, logits):
        logits[eos] = -float("inf")
        return logits

    return LogitsProcessorList([no_eos])


class _TextStream:
    """Generated pieces as text: characters split across tokens joined, the text cut at a stop
    string or where it starts repeating, and the stream held back by what a stop or a repeat
    could still cut, so it never shows text the answer then loses."""

    def __init__(self, stops: list[str] | None, guard: bool,
                 on_text: Callable[[str], None] | None) -> None:
        self.stops = [x for x in (stops or []) if x]
        self.hold = max((len(x) for x in self.stops), default=1) - 1  # may begin a stop string
        self.guard = guard
        if guard:
            self.hold = max(self.hold, REPEAT_SPAN)
        self.on_text = on_text
        self.text, self.shown, self.raw, self.finish = "", 0, b"", "length"

    def add(self, piece: bytes) -> str:
        """Take one token's bytes; the finish reason so far ("length" while it goes on)."""
        self.raw += piece
        try:
            self.text += self.raw.decode("utf-8")
            self.raw = b""
        except UnicodeDecodeError:  # a character split across tokens: wait for the rest
            if len(self.raw) > 8:
                self.text += self.raw.decode("utf-8", errors="replace")
                self.raw = b""
        hit = min((i for i in (self.text.find(x) for x in self.stops) if i >= 0), default=-1)
        if hit >= 0:
            self.text, self.finish = self.text[:hit], "stop"
        elif self.guard and (cut := repeat_start(self.text)) >= 0:
            self.text, self.finish = self.text[:cut].rstrip(), "repetition"
        if self.on_text and len(self.text) - self.hold > self.shown:
            upto = len(self.text) if self.finish != "length" else len(self.text) - self.hold
            self.on_text(self.text[self.shown:upto])
            self.shown = upto
        return self.finish

    def flush(self) -> None:
        """Show what was held back, once generation has ended."""
        if self.on_text and self.shown < len(self.text):
            self.on_text(self.text[self.shown:])
            self.shown = len(self.text)


def chat_parts(llm, system: str, context: str, question: str,
               history: list[tuple[str, str]] | None = None) -> tuple[str, str, list[str]]:
    """(prefix, suffix, stop strings) in the model's chat template, from any llama_cpp.Llama of
    the model, a vocab-only one included (Engine.chat_parts)."""
    history = list(history or [])
    context = defuse(llm, context)
    template = llm.metadata.get("tokenizer.chat_template")
    eos = llm.detokenize([llm.token_eos()]).decode(errors="ignore")
    if template:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        bos = llm.detokenize([llm.token_bos()]).decode(errors="ignore") if llm.token_bos() >= 0 else ""
        fmt = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
        head = f"{context}\n\nQuestion: " if context else ""
        msgs = [{"role": "system", "content": system}]
        for q, a in history:
            msgs += [{"role": "user", "content": head + q}, {"role": "assistant", "content": a}]
            head = "Question: "
        msgs.append({"role": "user", "content": head + SENTINEL})
        try:
            rendered = fmt(messages=msgs)
            prompt = rendered.prompt
            if prompt.count(SENTINEL) == 1:
                pre, post = prompt.split(SENTINEL)
                stops = rendered.stop if isinstance(rendered.stop, list) else \
                    ([rendered.stop] if rendered.stop else [])
                return pre, question + post, [s for s in stops if s] + ([eos] if eos else [])
        except Exception:  # a template that refuses a system role, etc.: fall through
            pass
    pre = f"{system}\n\n{context}\n\n" if context else f"{system}\n\n"
    pre += "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in history)
    return pre + "Question: ", f"{question}\nAnswer:", ["\nQuestion:", "\n\n\n"]


_SPECIAL: dict[str, tuple] = {}  # model file -> (candidate pattern, special texts)
# Most special tokens are spelled <...> or [...]: candidates of those shapes are checked against
# the set; the rest go into the pattern as they are (a pattern of Gemma's 6,000 would be slow).
SHAPES = (r"<[^<>\n]{1,64}>", r"\[[^\[\]\n]{1,64}\]")


def special_texts(llm) -> tuple:
    """(pattern, texts): the texts that tokenize as this model's control tokens, and user-defined
    ones spelled like chat markers ("<|...|>"): what a prompt tokenized with special=True turns
    into chat structure. Other user-defined tokens (Gemma's HTML tags, runs of newlines) stay."""
    import re

    import llama_cpp

    key = str(getattr(llm, "model_path", id(llm)))
    if key not in _SPECIAL:
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        texts = set()
        for i in range(llm.n_vocab()):
            attr = llama_cpp.llama_vocab_get_attr(vocab, i)
            if attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED):
                text = llm.detokenize([i], special=True).decode("utf-8", errors="ignore")
                if attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL or re.fullmatch(r"<\|.+\|>", text):
                    texts.add(text)
        texts = {t for t in texts if len(t) >= 2 and not t.isspace()}
        odd = sorted((t for t in texts if not any(re.fullmatch(x, t) for x in SHAPES)),
                     key=len, reverse=True)
        _SPECIAL[key] = (re.compile("|".join([*SHAPES, *map(re.escape, odd)])) if texts else None,
                         frozenset(texts))
    return _SPECIAL[key]


def defuse(llm, text: str) -> str:
    """Document text as data: any spelling of a special token ("<|im_start|>system", "</s>")
    gets a word joiner after its first character, so it tokenizes as plain text and cannot
    open a turn, end the prompt or speak as the system."""
    if not text:
        return text
    pattern, texts = special_texts(llm)
    if pattern is None:
        return text

    def fix(m) -> str:
        t = m.group(0)
        return t[0] + "\u2060" + t[1:] if t in texts else t

    return pattern.sub(fix, text)


def add_bos(llm) -> bool:
    """Whether this model's prompts begin with BOS."""
    if hasattr(llm._model, "add_bos_token"):
        return bool(llm.token_bos() >= 0 and llm._model.add_bos_token())
    return True


_PREFIX_TOKENS: dict[tuple[int, int], list[int]] = {}  # a prompt prefix tokenized ahead of use


def _text_key(text: str) -> tuple[int, int]:
    return len(text), hash(text)


def use_prompt_kernels(plan: Plan) -> None:
    """Tell the patched llama.cpp the plan's kernel choice before its first matrix product (it
    reads the variable once per process; one set by the user is left as it is)."""
    if plan.device == "cuda" and plan.cublas_min_batch and not os.environ.get(KERNEL_ENV):
        os.environ[KERNEL_ENV] = str(plan.cublas_min_batch)


class Engine:
    """A loaded model with its plan; generation streams, and document prefixes are cached.

    The context keeps the last prompt resident: a question whose prefix (system prompt and
    documents) the context already holds prefills only what follows. With keep_resident (the
    server), a prefix about to be replaced is first saved to the prompt cache, so going back to
    an earlier document restores it instead of prefilling it again.
    """

    @classmethod
    def from_settings(cls, s, **extra) -> "Engine":
        """The engine the settings describe (model, context, KV type, GPU layers, threads, the
        prompt cache's folder and size, the GPU memory limit); extra: n_seq, keep_resident, ..."""
        args = dict(n_ctx=s.ctx, kv_type=s.kv_type, gpu_layers=s.gpu_layers,
                    cache_dir=s.index_dir / ".prompt-cache", n_threads=s.threads,
                    disk_bytes=s.prompt_cache_bytes, gpu_memory_gb=s.gpu_memory_gb,
                    prompt_kernels=s.prompt_kernels)
        return cls(s.model, **{**args, **extra})

    def __init__(self, model: str | Path | None = None, n_ctx: int | None = None,
                 kv_type: str | None = None, gpu_layers: int | None = None,
                 cache_dir: Path | None = None, verbose: bool = False,
                 n_threads: int | None = None, plan: Plan | None = None, n_seq: int = 1,
                 keep_resident: bool = False, memory_bytes: int | None = None,
                 disk_bytes: int | None = None, gpu_memory_gb: float | None = None,
                 prompt_kernels: str = "auto") -> None:
        self.path = resolve_model(model)
        self.arch: Arch = read_arch(self.path)
        self.plan: Plan = plan or make_plan(self.arch, probe_memory(gpu_memory_gb), n_ctx, kv_type,
                                            gpu_layers, n_seq=n_seq, prompt_kernels=prompt_kernels)
        use_prompt_kernels(self.plan)
        import llama_cpp  # noqa: F401
        from llama_cpp import Llama

        # Side by side, each of n_seq sequences gets a cache stream of n_ctx cells of its own (the
        # plan counted n_seq x n_ctx), so a sequence's attention reads its own cells only. One
        # unified cache for all was measured slower by llama.cpp's own batched bench on the H100
        # (docs/benchmarks.md); LCDOC_KV_UNIFIED=1 selects it, for measuring.
        # One output row per sequence and step is all side-by-side decoding asks for: so
        # llama.cpp sizes the graph of its in-graph sampling (parallel.py) for that, not n_batch.
        extra = (dict(n_seq_max=self.plan.n_seq, kv_unified=kv_unified(), n_outputs_max_per_seq=1)
                 if self.plan.n_seq > 1 else {})
        try:
            with _context_defaults(**extra):
                self.llm = Llama(model_path=str(self.path), verbose=verbose, n_threads=n_threads,
                                 **self.plan.llama_kwargs(self.arch))
        except ValueError as e:  # llama.cpp could not allocate or load
            raise DoesNotFitError(f"{self.path}: llama.cpp could not create the context ({e})") from e
        _LIVE.add(self.llm)
        # The vocab-only load the documents were counted with, else the model's own vocabulary:
        # loading a vocab-only copy first would add 0.4 s (128K tokens) before every model load.
        self.tokenizer = Tokenizer.loaded(self.path) or Tokenizer.of(self.llm)
        global _MODELS_LOADED
        _MODELS_LOADED += 1
        _ENGINES.add(self)
        st = self.path.stat()
        self.model_id = f"{self.path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
        self.cache_settings = cache_settings(self.plan)
        self.cache = PromptCache(cache_dir, memory_bytes, disk_bytes)
        self.keep_resident = keep_resident
        # Asked between generated tokens; True stops the answer with Cancelled (a server whose
        # client has gone).
        self.cancel: Callable[[], bool] | None = None
        self._resident: tuple[str, int, bool] | None = None  # (key, n_prefix, persist)
        self._pieces: dict[int, bytes] = {}  # token id -> its text, for prompt_tokens
        self._save_s = 0.0  # prompt-cache saves inside the current completion

    @property
    def n_ctx(self) -> int:
        return self.plan.n_ctx

    def count(self, text: str) -> int:
        return self.tokenizer.count(text)

    # --- prompts --------------------------------------------------------------------------
    def chat_parts(self, system: str, context: str, question: str,
                   history: list[tuple[str, str]] | None = None) -> tuple[str, str, list[str]]:
        """(prefix, suffix, stop strings): the prefix holds system + documents (+ the conversation
        so far), so it can be cached and a follow-up extends it rather than replacing it."""
        return chat_parts(self.llm, system, context, question, history)

    def prompt_tokens(self, prefix: str, suffix: str) -> tuple[list[int], list[int]]:
        """Tokens of prefix (with BOS) and suffix, tokenized apart so the prefix is a stable key.

        Where the context already holds tokens whose text begins the prefix (the previous turn
        of a conversation: its question and the answer as generated), those very tokens are
        kept and only the rest is tokenized: re-tokenizing the whole prompt would split "Question:
        What" or an answer differently from how they were fed or generated, and every cell from
        that point would be prefilled again.
        """
        data = prefix.encode("utf-8", errors="replace")
        held, covered = self._held_prefix(data)
        if held:
            rest = data[covered:]
            pre = held + (self.llm.tokenize(rest, add_bos=False, special=True) if rest else [])
        else:
            pre = _PREFIX_TOKENS.pop(_text_key(prefix), None) or \
                self.llm.tokenize(data, add_bos=add_bos(self.llm), special=True)
        suf = self.llm.tokenize(suffix.encode("utf-8", errors="replace"), add_bos=False, special=True)
        return pre, suf

    def _held_prefix(self, data: bytes) -> tuple[list[int], int]:
        """The leading tokens the context holds whose text is a prefix of `data`, and how many
        bytes of it they cover; ([], 0) when they do not begin it."""
        import numpy as np

        n = self.llm.n_tokens
        if n == 0 or not data:
            return [], 0
        held = self.llm.input_ids[:n]
        self._learn_pieces(held)
        skip_bos = add_bos(self.llm) and int(held[0]) == self.llm.token_bos()
        pieces = [b"" if (i == 0 and skip_bos) else self._pieces[t]
                  for i, t in enumerate(held.tolist())]
        ends = np.cumsum([len(x) for x in pieces])
        text = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        want = np.frombuffer(data, dtype=np.uint8)
        m = min(len(text), len(want))
        diff = np.flatnonzero(text[:m] != want[:m])
        common = int(diff[0]) if len(diff) else m
        k = int(np.searchsorted(ends, common, side="right"))  # tokens wholly inside it
        if k == 0 or ends[k - 1] == 0:
            return [], 0
        return [int(t) for t in held[:k]], int(ends[k - 1])

    def _learn_pieces(self, tokens) -> None:
        """Remember the text (bytes, special tokens spelled out) of each distinct token id."""
        import numpy as np

        new = [t for t in np.unique(np.asarray(tokens)).tolist() if t not in self._pieces]
        for t in new:
            self._pieces[t] = self._piece(t)

    def _piece(self, token: int, special: bool = True) -> bytes:
        """A token's exact bytes (llama-cpp-python's own detokenize uses a 32-byte buffer and
        returns nothing for a longer token, such as a newline and 32 spaces)."""
        import ctypes

        import llama_cpp

        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.llm._model.vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    # --- generation -----------------------------------------------------------------------
    # llama.cpp's own state calls, rather than Llama.save_state/load_state: those also copy the
    # n_batch x n_vocab score array (100 MB for SmolLM2), zero-fill and copy the state twice more,
    # which at 128K tokens of an 8B model (15 GB of state) costs seconds.
    def _can_trim(self) -> bool:
        """Whether cells past the prefix can be dropped after restoring (not for window-sized SWA)."""
        return not (self.arch.swa_layers and not self.plan.swa_full)

    def _snapshot(self, n_prefix: int) -> Snapshot:
        import ctypes

        import llama_cpp
        import numpy as np

        ctx = self.llm._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buf = np.empty(size, dtype=np.uint8)  # not zero-filled, unlike a ctypes array
        n = llama_cpp.llama_state_get_data(ctx, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), size)
        return Snapshot(n_prefix, self.llm.input_ids[:n_prefix].copy(), buf, int(n))

    def _restore(self, snap: Snapshot) -> None:
        import ctypes

        import llama_cpp
        import numpy as np

        state = snap.llama_state
        arr = state if isinstance(state, np.ndarray) else np.frombuffer(state, dtype=np.uint8)
        ptr = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        if llama_cpp.llama_state_set_data(self.llm._ctx.ctx, ptr, snap.size) != snap.size:
            self.forget_resident()
            raise RefusedState()
        # A snapshot taken after an answer also holds the question and answer: drop them.
        self.llm._ctx.kv_cache_seq_rm(-1, snap.n_tokens, -1)
        self.llm.input_ids[: snap.n_tokens] = snap.input_ids[: snap.n_tokens]
        self.llm.n_tokens = snap.n_tokens
        if hasattr(self.llm, "_requires_eval"):
            self.llm._requires_eval = True

    def resident_len(self, tokens: list[int]) -> int:
        """How many leading tokens of `tokens` the context already holds (no prefill needed)."""
        import numpy as np

        n = min(self.llm.n_tokens, len(tokens))
        if n == 0:
            return 0
        diff = np.flatnonzero(self.llm.input_ids[:n] != np.asarray(tokens[:n], dtype=np.intc))
        return int(diff[0]) if len(diff) else n

    def forget_resident(self) -> None:
        """The context's cells were changed behind Llama's back (a parallel batch): start over."""
        self.llm.n_tokens = 0
        self._resident = None

    def stash_resident(self, disk_only: bool = False) -> bool:
        """Save the prefix the context holds to the prompt cache (memory, then disk in the
        background), unless it is there already or fits neither tier. True if saved.

        disk_only: for a process about to exit, where only the disk copy outlives it.
        """
        if self._resident is None:
            return False
        key, n, persist = self._resident
        self._resident = None
        if key in self.cache or self.llm.n_tokens < n:
            return False
        if prefix_key(self.model_id, self.cache_settings, list(self.llm.input_ids[:n])) != key:
            return False  # the context moved on to other tokens since
        import llama_cpp

        size = llama_cpp.llama_state_get_size(self.llm._ctx.ctx)
        to_disk = persist and self.cache.fits_disk(size)
        if not to_disk and (disk_only or size > self.cache.memory_budget):
            return False  # larger than every budget that matters: copying it out would be wasted
        self.cache.put(key, self._snapshot(n), persist=persist)
        return True

    def save_detached(self, prefill_tok_s: float | None = None) -> bool:
        """For a process about to exit: copy the resident prefix's state out of the context and
        write it to disk in a child process that the caller does not wait for. Only when the
        next process would read it back much faster than it would prefill it (prefill_tok_s:
        this model's measured speed; lcdoc.engine.speed.worth_saving): at 80K tokens of an 8B
        model on an H100 the copy alone took 4.8 s for a state that reads back in 10.7 s against
        13 s of prefill. True if a writer was started."""
        if self._resident is None:
            return False
        key, n, persist = self._resident
        self._resident = None
        if not persist or key in self.cache or self.llm.n_tokens < n:
            return False
        if prefix_key(self.model_id, self.cache_settings, list(self.llm.input_ids[:n])) != key:
            return False
        import llama_cpp

        from lcdoc.engine.speed import worth_saving

        size = llama_cpp.llama_state_get_size(self.llm._ctx.ctx)
        if not self.cache.fits_disk(size) or not worth_saving(size, n, prefill_tok_s,
                                                               self.cache.folder):
            return False
        self.cache.write_detached(key, self._snapshot(n))
        return True

    def complete(self, prefix: str, suffix: str, **options: Any) -> Completion:
        """Generate after prefix + suffix (options as complete_tokens); the prefix's state is cached."""
        t0 = time.perf_counter()
        pre, suf = self.prompt_tokens(prefix, suffix)
        tokenize_s = time.perf_counter() - t0
        return dataclasses.replace(self.complete_tokens(pre, suf, **options), tokenize_s=tokenize_s)

    def _load_prefix(self, pre: list[int], key: str, persist: bool) -> None:
        """Make the context hold `pre`: resident already, restored from the cache, or (for
        window-sized SWA caches, which cannot be trimmed later) prefilled and saved now."""
        have = self.resident_len(pre)
        if have == len(pre):
            return
        if self._resident is not None and have >= self._resident[1]:
            return  # a follow-up: the resident document prefix carries on, with the conversation
        if self.keep_resident:
            t0 = time.perf_counter()
            self.stash_resident()
            self._save_s += time.perf_counter() - t0
        self.cache.last_read = None
        snap = self.cache.get(key)
        if snap is not None:
            try:
                self._restore(snap)
                if self.cache.last_read and self.cache.folder is not None:
                    from lcdoc.engine.speed import record_restore

                    record_restore(self.cache.folder, *self.cache.last_read)
                return
            except RefusedState:
                self.cache.discard(key)  # a miss, and never tried again
        if not self._can_trim():
            self.llm.reset()
            self.llm.eval(pre)
            t0 = time.perf_counter()
            self.cache.put(key, self._snapshot(len(pre)), persist=persist)
            self._save_s += time.perf_counter() - t0

    def complete_tokens(
        self,
        pre: list[int],
        suf: list[int],
        max_tokens: int = 384,
        stop: list[str] | None = None,
        on_text: Callable[[str], None] | None = None,
        cache_prefix: bool = True,
        persist_prefix: bool = True,
        temperature: float = 0.0,
        ignore_eos: bool = False,
        repeat_penalty: float = 1.1,
    ) -> Completion:
        """As complete(), on token ids (benchmarks use it to hit exact lengths).

        With cache_prefix, the prefix's state is kept resident and remembered as the one to save
        by stash_resident() (the CLI calls it after printing the answer, off the answer's path).
        """
        import llama_cpp

        tokens = pre + suf
        if len(tokens) + max_tokens > self.n_ctx:
            raise DoesNotFitError(f"prompt of {len(tokens)} tokens + {max_tokens} for the answer "
                                  f"exceeds the {self.n_ctx}-token context")
        t0 = time.perf_counter()
        self._save_s = 0.0
        if cache_prefix:
            key = prefix_key(self.model_id, self.cache_settings, pre)
            self._load_prefix(pre, key, persist_prefix)
        # llama-cpp-python's generate() reuses the longest prefix the context holds and prefills
        # the rest; at least the last token is evaluated again, for fresh logits.
        cached = min(self.resident_len(tokens), len(tokens) - 1)
        self._resident = (key, len(pre), persist_prefix) if cache_prefix else None

        procs = _no_eos(self.llm) if ignore_eos else None
        vocab = self.llm._model.vocab
        # A benchmark that forces a length (ignore_eos) wants no early stop on a repeat either.
        out = _TextStream(stop, guard=not ignore_eos, on_text=on_text)
        first, n_out = None, 0
        debug_mark("prefill starts")
        self._prefill(tokens)
        gen = self.llm.generate(tokens, top_k=1 if temperature == 0 else 40, temp=temperature,
                                repeat_penalty=repeat_penalty, logits_processor=procs)
        for tok in gen:
            if first is None:
                first = time.perf_counter()
            if self.cancel is not None and self.cancel():
                gen.close()
                raise Cancelled()
            if not ignore_eos and llama_cpp.llama_vocab_is_eog(vocab, tok):
                out.finish = "stop"
                break
            n_out += 1
            if out.add(self._piece(tok, special=False)) != "length" or n_out >= max_tokens:
                break
        gen.close()
        end = time.perf_counter()
        debug_mark("generated")
        out.flush()
        text, finish = out.text, out.finish
        if cache_prefix and self.keep_resident:  # a resident engine's next turn finds these
            # tokens' text known (an 87K prompt: ~60 ms); a one-shot process has no next turn
            self._learn_pieces(self.llm.input_ids[: self.llm.n_tokens])
        first = first or end
        return Completion(text, len(tokens), n_out, cached, first - t0 - self._save_s, end - first,
                          finish, save_s=self._save_s)

    def _prefill(self, tokens: list[int]) -> None:
        """Feed the prompt past what the context holds, n_batch tokens at a time, asking
        `cancel` between batches (llama-cpp-python's generate() would feed it in one call that
        nothing can stop: a server whose client left would prefill 87K tokens for nobody). The
        last token is left to generate(), which evaluates it again for fresh logits."""
        start = self.resident_len(tokens)
        end = len(tokens) - 1
        if end - start <= self.llm.n_batch:
            return
        self.llm.n_tokens = start
        for lo in range(start, end, self.llm.n_batch):
            if self.cancel is not None and self.cancel():
                raise Cancelled()
            self.llm.eval(tokens[lo : min(end, lo + self.llm.n_batch)])

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
