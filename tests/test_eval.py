"""The evaluation instruments: NIAH grid and heat map, retrieval recall per retriever."""

import csv

import pytest

from lcdoc.eval.niah import cut_to_tokens, heatmap, make_needles, parse_list, plant

from tests.conftest import run_lcdoc


def test_parse_list_understands_k_suffixes():
    assert parse_list("1k,2k,4k") == [1024, 2048, 4096] and parse_list("0,50,100") == [0, 50, 100]


def test_needles_are_planted_at_the_requested_depth():
    paras = [f"p{i}" for i in range(10)]
    nd = make_needles(1, 0)
    assert plant(paras, nd, 0).split("\n\n")[0] == nd[0].fact
    assert plant(paras, nd, 100).split("\n\n")[-1] == nd[0].fact
    assert plant(paras, nd, 50).split("\n\n")[5] == nd[0].fact
    many = make_needles(3, 1)
    assert len({n.answer for n in many}) == 3 and all(n.fact in plant(paras, many, 20) for n in many)


def test_cut_respects_the_token_length():
    text = "\n\n".join(["word " * 10] * 100)
    paras = cut_to_tokens(text, 200, lambda s: len(s.split()))
    assert sum(len(p.split()) + 1 for p in paras) <= 200 and len(paras) == 18


def test_heatmap_is_drawn_from_the_csv_alone(tmp_path):
    rows = [dict(length=L, depth=d, mode="stuff", route="stuff", rope="native" if L < 8192 else "YaRN x2",
                 needles=1, found=int(d < 50), score=float(d < 50), answer="x", seconds=1.0)
            for L in (1024, 16384) for d in (0, 50, 100)]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    png = heatmap(tmp_path / "t.csv", tmp_path / "h.png", "title")
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_niah_grid_through_the_ask_path_scores_honestly(tmp_path):
    from lcdoc.eval.niah import run_niah
    from lcdoc.settings import load_settings

    s = load_settings(index_dir=tmp_path / "idx")
    trials = run_niah([512], [0, 100], "stuff", 1, None, None, tmp_path / "out", s)
    assert [t.depth for t in trials] == [0, 100]
    for t in trials:
        code = make_needles(1, t.length * 101 + t.depth)[0].answer
        assert (code in t.answer) == (t.found == 1) and t.score == t.found  # no score without the fact
        assert t.route == "stuff" and t.rope == "native"
    assert (tmp_path / "out" / "trials.csv").read_text().count("\n") == 3


@pytest.mark.slow
def test_hybrid_recall_is_measured_for_each_retriever(tmp_path):
    from lcdoc.eval.retrieval import run_recall

    rows = {r.mode: r for r in run_recall([], tmp_path, n_facts=8)}
    assert set(rows) == {"bm25", "dense", "hybrid"}
    for r in rows.values():
        assert 0 <= r.recall_at_1 <= r.recall_at_5 <= r.recall_at_10 <= 1 and r.queries == 8
    assert rows["hybrid"].recall_at_10 >= 0.75  # planted facts are findable


@pytest.mark.slow
def test_fusions_are_compared_on_the_same_rankings(tmp_path):
    from lcdoc.eval.fusion import collect, fusions, rrf, score

    fused = dict(rrf([(1, 9.0), (2, 8.0), (3, 1.0)], [(3, 0.9), (2, 0.8), (9, 0.1)]))
    assert fused[2] > fused[1] and fused[3] > fused[1] and fused[3] > fused[9]  # agreement counts
    qs = collect([], tmp_path, [0], n_facts=8)  # the default haystack, 8 planted facts
    assert len(qs) == 8 and all(good for *_, good in qs)  # each fact is in a chunk one list found
    table = {name: score(f, qs) for name, f in fusions().items()}
    for r1, r5, r10, mrr in table.values():
        assert 0 <= r1 <= r5 <= r10 <= 1 and r1 <= mrr <= r10
    assert table["bm25 alone"][2] >= 0.75  # the planted facts are findable at all


@pytest.mark.slow
def test_bench_indexing_reports_pages_chunks_and_both_extraction_times(tmp_path, corpus):
    from lcdoc.eval.bench import bench_indexing

    r = bench_indexing([str(corpus)], str(tmp_path / "work"), workers=2)
    assert r.files == len([p for p in corpus.rglob("*") if p.is_file()])
    assert r.pages > 0 and r.chunks > 0 and r.tokens > r.chunks
    assert r.chunks_per_s == pytest.approx(r.chunks / r.seconds)
    assert r.extract_serial_s > 0 and r.extract_parallel_s > 0 and r.workers == 2


def test_bench_rejects_unknown_parts():
    r = run_lcdoc(["bench", "--only", "index,gpu"])
    assert r.returncode == 2 and "--only index,gpu" in r.stderr
