"""Scorecard chart rendering time and PNG size.

    python bench/bench_charts.py [--charts N] [--cold N] [--threads T] [--seed S] [--runs N]

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
drawn alone. Every phase runs --runs (3) times; figures are the median and range of the
runs. Target: warm p50 <= 15 ms; PNG < 60 KB. Always exits 0.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from figures import add_runs, figure, load_line, machine_line, runs_of, verdict

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


def timed(dims: list[Dimension], trend: list[float], title: Bilingual, lang: str) -> tuple[float, bytes]:  # fmt: skip
    start = time.perf_counter()
    png = scorecard_chart(dims, trend, title=title, lang=lang)  # type: ignore[arg-type]
    return (time.perf_counter() - start) * 1000, png


def p95(ms: list[float]) -> float:
    ordered = sorted(ms)
    return ordered[max(0, int(len(ordered) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charts", type=int, default=200)
    parser.add_argument("--cold", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    add_runs(parser)
    args = parser.parse_args()
    print(machine_line())
    rng = random.Random(args.seed)
    heads = titles()
    clear = getattr(charts, "_clear_caches", lambda: None)
    cjk = "a CJK font installed" if has_cjk_font() else "no CJK font: zh falls back to English"
    runs = runs_of(args)
    print(f"scorecard chart, 600x300 PNG ({cjk}); {args.charts} warm charts per case, "
          f"{runs} runs: median (range) of each run's figure")  # fmt: skip
    cases = [(name, labels, lang) for name, labels in rubric_labels().items() for lang in ("en", "zh")]  # fmt: skip
    figures: dict[tuple[str, str], dict[str, list[float]]] = {}
    worst: list[float] = []
    all_labels = list(rubric_labels().values())
    alone_rates, together_rates, identical = [], [], []
    for _ in range(runs):
        warm_p50 = []
        for name, labels, lang in cases:
            got = figures.setdefault((name, lang), {})
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
                sizes.append(len(png) / 1024)
            for key, value in (
                ("cold p50", statistics.median(cold)),
                ("warm p50", statistics.median(warm)),
                ("warm p95", p95(warm)),
                ("warm max", max(warm)),
                ("PNG max", max(sizes)),
            ):
                got.setdefault(key, []).append(value)
            warm_p50.append(statistics.median(warm))
        worst.append(max(warm_p50))
        jobs = [
            (*job(rng, rng.choice(all_labels), heads), rng.choice(["en", "zh"]))
            for _ in range(args.charts * args.threads)
        ]
        start = time.perf_counter()
        alone = [timed(*j)[1] for j in jobs]
        alone_rates.append(len(jobs) / (time.perf_counter() - start))
        start = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            together = list(pool.map(lambda j: timed(*j)[1], jobs))
        together_rates.append(len(jobs) / (time.perf_counter() - start))
        identical.append(sum(a == b for a, b in zip(alone, together, strict=True)) / len(jobs))
    for (name, lang), got in figures.items():
        print(f"  {name:8} {lang}  " + "   ".join(
            f"{key} {figure(values, 'KB' if key.startswith('PNG') else 'ms', 1)}"
            for key, values in got.items()
        ))  # fmt: skip
    sizes_ok = all(max(got["PNG max"]) < 60 for got in figures.values())
    print(f"  warm p50, worst case {figure(worst, 'ms', 2)}   target <= 15 ms: "
          f"{verdict(worst, lambda ms: ms <= 15)}; PNG < 60 KB: {'met' if sizes_ok else 'NOT met'}")  # fmt: skip
    print(f"  one thread {figure(alone_rates, '/s', 0)} charts; {args.threads} threads "
          f"{figure(together_rates, '/s', 0)}; images identical to the same chart drawn alone: "
          f"{min(identical):.0%} in the worst run")  # fmt: skip
    print(load_line())


if __name__ == "__main__":
    main()
