"""Scorecard chart rendering time and PNG size.

    python bench/bench_charts.py [--charts N] [--cold N] [--threads T] [--seed S]

Renders the end-of-session chart (``bot.charts.scorecard_chart``) as the Telegram bot does
at the end of every session, with the real rubric labels (the default rubric's 3
dimensions, the 100-point assessment's 16) and scenario titles, random scores (some
unscored) and trends of 1-30 sessions, in English and Chinese (Chinese falls back to
English when no CJK font is installed; the header says which). For each case it prints
p50/p95/max milliseconds (time.perf_counter around one call) of:

  cold   the first chart for a set of texts: every cache cleared before each (--cold N)
  warm   --charts N charts after a warm-up (each scenario title once, then 20 charts);
         new score values still render their text once (~1 ms)

and the PNG sizes (min/median/max). Then --threads T threads render --charts N charts each
at once, as ``asyncio.to_thread`` would, and every image is checked against the same chart
drawn alone. Target: warm p50 <= 15 ms; PNG < 60 KB. Always exits 0.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from bot import charts
from bot.charts import has_cjk_font, scorecard_chart
from bot.content import ScenarioLibrary
from graders._base import Bilingual
from graders.rubric import _rubrics

Dimension = tuple[Bilingual, float | None, float]


def rubric_labels() -> dict[str, list[tuple[Bilingual, float]]]:
    rubrics = _rubrics()
    default = [({"zh": d.title.zh, "en": d.title.en}, 100.0) for d in rubrics.default.dimensions.values()]  # fmt: skip
    assessment = [({"zh": i.title.zh, "en": i.title.en}, i.max) for i in rubrics.assessment100.items]  # fmt: skip
    return {"3 dims": default, "16 dims": assessment}


def titles() -> list[Bilingual]:
    library = ScenarioLibrary.load()
    return [
        {"zh": library.get(i).scenario.title.zh, "en": library.get(i).scenario.title.en}
        for i in library.ids()
    ]


def job(
    rng: random.Random, labels: Sequence[tuple[Bilingual, float]], heads: list[Bilingual]
) -> tuple[list[Dimension], list[float], Bilingual]:
    dims: list[Dimension] = []
    for label, top in labels:
        score = None if rng.random() < 0.1 else round(rng.uniform(0, top) * 2) / 2
        dims.append((label, score, top))
    trend = [round(rng.uniform(30, 100), 1) for _ in range(rng.randint(1, 30))]
    return dims, trend, rng.choice(heads)


def stats(ms: list[float]) -> str:
    ordered = sorted(ms)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"p50 {statistics.median(ordered):7.2f}  p95 {p95:7.2f}  max {ordered[-1]:7.2f} ms"


def timed(dims: list[Dimension], trend: list[float], title: Bilingual, lang: str) -> tuple[float, bytes]:  # fmt: skip
    start = time.perf_counter()
    png = scorecard_chart(dims, trend, title=title, lang=lang)  # type: ignore[arg-type]
    return (time.perf_counter() - start) * 1000, png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charts", type=int, default=200)
    parser.add_argument("--cold", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    heads = titles()
    clear = getattr(charts, "_clear_caches", lambda: None)
    cjk = "a CJK font installed" if has_cjk_font() else "no CJK font: zh falls back to English"
    print(f"scorecard chart, 600x300 PNG ({cjk}); {args.charts} warm charts per case")
    warm_p50: list[float] = []
    for name, labels in rubric_labels().items():
        for lang in ("en", "zh"):
            cold = []
            for _ in range(args.cold):
                clear()
                cold.append(timed(*job(rng, labels, heads), lang)[0])
            for head in heads:  # every template drawn, then some text images
                timed(*job(rng, labels, [head]), lang)
            for _ in range(20):
                timed(*job(rng, labels, heads), lang)
            warm, sizes = [], []
            for _ in range(args.charts):
                ms, png = timed(*job(rng, labels, heads), lang)
                warm.append(ms)
                sizes.append(len(png))
            warm_p50.append(statistics.median(warm))
            print(f"  {name:8} {lang}  cold {stats(cold)}")
            print(f"  {name:8} {lang}  warm {stats(warm)}")
            print(f"  {name:8} {lang}  PNG  min {min(sizes) / 1024:.1f}  median "
                  f"{statistics.median(sizes) / 1024:.1f}  max {max(sizes) / 1024:.1f} KB")  # fmt: skip
    worst = max(warm_p50)
    print(f"  warm p50 worst case {worst:.2f} ms (target <= 15 ms)  {'OK' if worst <= 15 else 'MISS'}")  # fmt: skip

    all_labels = list(rubric_labels().values())
    jobs = [
        (*job(rng, rng.choice(all_labels), heads), rng.choice(["en", "zh"]))
        for _ in range(args.charts * args.threads)
    ]
    start = time.perf_counter()
    alone = [timed(*j)[1] for j in jobs]
    alone_rate = len(jobs) / (time.perf_counter() - start)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        together = list(pool.map(lambda j: timed(*j)[1], jobs))
    elapsed = time.perf_counter() - start
    same = sum(a == b for a, b in zip(alone, together, strict=True))
    print(f"  one thread: {alone_rate:,.0f} charts/s; {args.threads} threads: {len(jobs) / elapsed:,.0f} charts/s; "
          f"{same}/{len(jobs)} images identical to the same chart drawn alone")  # fmt: skip


if __name__ == "__main__":
    main()
