"""Benchmark the skills catalog at crawl size: importing 100,000 skills, and loading the catalog for a run.

    .venv/bin/python bench/catalog_speed.py [--rows 100000] [--keep DIR]

Works in a temporary catalog folder holding a copy of the curated YAML files. Reported:
* import: a generated CSV crawl (store categories, review counts, ratings) into an empty store, then
  the same file again (every row unchanged), then a file in which a tenth of the rows changed (merge
  and rewrite); each in a child process, with its peak memory;
* what an operator waits for, each in a fresh interpreter: `catalog list --category C --top 50`,
  the whole category's listing, and `run --dry-run` of a persona whose plan is `generate: {top: 50}`;
* load: `load_catalog()` in this process, and a fresh interpreter that imports the package, loads the
  catalog and looks up a skill (what `orchestrator run` pays before its first step);
* lookups a run makes: `id in catalog`, `catalog[id]`, `in_category()`;
* for comparison, reading the same records eagerly from JSON Lines and building every Skill.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from orchestrator.catalog.skills import Skill, load_catalog  # noqa: E402

HEADER = ["ASIN", "Name", "Invocation Name", "Category", "Vendor", "Example Phrases", "Account Linking",
          "Privacy Policy", "Num of Reviews", "Rating"]
#: Store categories as a crawl names them: the study's nine through the shipped mapping, and others.
STORE_CATEGORIES = ["Pets & Animals", "Health & Fitness", "Smart Home", "Connected Car", "Travel & Transportation",
                    "Wine & Beverages", "Dating", "Fashion & Style", "Religion & Spirituality", "Games & Trivia",
                    "Education & Reference", "News", "Novelty & Humor", "Food & Drink"]


def asins(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_uppercase + string.digits
    found: set[str] = set()
    while len(found) < count:
        found.add("B" + "".join(rng.choices(alphabet, k=9)))
    return sorted(found)


def crawl_rows(ids: list[str], revision: int = 0) -> list[list[str]]:
    rows = []
    for index, skill_id in enumerate(ids):
        name = f"Skill {index} rev {revision if index % 10 == 0 else 0}"
        rows.append([skill_id, name, f"skill number {index}", STORE_CATEGORIES[index % len(STORE_CATEGORIES)],
                     f"Developer {index % 997}",
                     f"Alexa, open skill number {index}|Alexa, ask skill number {index} for a tip|Help",
                     "yes" if index % 7 == 0 else "", f"https://developer{index % 997}.example/privacy",
                     f"{(index * 7919) % 20011:,}", f"{1 + (index % 40) / 10:.1f}"])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows(rows)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


IMPORT_SCRIPT = """
import resource, sys, time
from pathlib import Path
from orchestrator.catalog.crawl import ImportOptions, import_crawl
started = time.perf_counter()
# One source for both crawl files: by default it is the file's name, which would update every record.
result = import_crawl(Path(sys.argv[1]), Path(sys.argv[2]), ImportOptions(source="bench crawl"))
print(time.perf_counter() - started, time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      result.added, result.updated, result.unchanged, result.rejected, result.written)
"""


def import_figure(label: str, folder: Path, crawl: Path) -> None:
    """In a child process, so that its peak memory is the import's own."""
    output = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT, str(folder), str(crawl)], cwd=PROJECT,
                            capture_output=True, text=True, check=True).stdout.split()
    seconds, cpu, peak_kb = float(output[0]), float(output[1]), int(output[2])
    added, updated, unchanged, rejected, written = output[3:]
    print(f"import {label:<28} {seconds:6.2f} s   (CPU {cpu:.2f} s, peak {peak_kb / 1024:.0f} MB) {added} added, "
          f"{updated} updated, {unchanged} unchanged, {rejected} rejected; store written: {written}")


def command_figure(label: str, args: list[str]) -> None:
    """Wall-clock time of an `orchestrator` command in a fresh interpreter, as the operator waits for it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], cwd=PROJECT, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.count("\n")
    status = "" if done.returncode == 0 else f"  EXIT {done.returncode}: {done.stderr.strip()[-200:]}"
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"{label:<36}{seconds:6.3f} s   (CPU {cpu:.2f} s) {lines} lines{status}")


def top_persona(work: Path) -> Path:
    """The study's pets persona, its plan the study's: the category's 50 most reviewed skills."""
    text = (PROJECT / "persona_scripts" / "pets-animals.yaml").read_text()
    path = work / "pets-top50.yaml"
    path.write_text(text[: text.index("plan:")] + "plan:\n  - generate: {top: 50}\n")
    return path


def cold_load(folder: Path, skill_id: str) -> float:
    script = ("import time; t = time.perf_counter(); "
              "from orchestrator.catalog.skills import load_catalog; from pathlib import Path; "
              f"c = load_catalog(Path({str(folder)!r})); c[{skill_id!r}]; print(time.perf_counter() - t)")
    output = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, check=True)
    return float(output.stdout)


def eager_jsonl(folder: Path, catalog: Any) -> tuple[float, float]:
    path = folder / "comparison.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for skill in catalog.imported.skills():
            out.write(json.dumps(skill.model_dump(mode="json"), ensure_ascii=False) + "\n")
    parse, records = timed(lambda: [json.loads(line) for line in path.open(encoding="utf-8")])
    build, _ = timed(lambda: {r["id"]: Skill.model_construct(**r) for r in records})
    path.unlink()
    return parse, build


def lookups(catalog: Any, ids: list[str]) -> None:
    sample = random.Random(1).sample(ids, 1000)
    seconds, _ = timed(lambda: [skill_id in catalog for skill_id in sample])
    print(f"1000 x `id in catalog`              {seconds * 1000:6.1f} ms")
    seconds, _ = timed(lambda: [catalog[skill_id] for skill_id in sample])
    print(f"1000 x `catalog[id]`                {seconds * 1000:6.1f} ms")
    seconds, skills = timed(lambda: catalog.in_category("pets-animals"))
    print(f"in_category('pets-animals')         {seconds * 1000:6.1f} ms   {len(skills)} skills")
    seconds, _ = timed(lambda: catalog.categories())
    print(f"categories()                        {seconds * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="Keep the catalog folder and crawl files here.")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="catalog-speed-"))
    folder = work / "skills_catalog"
    folder.mkdir(parents=True, exist_ok=True)
    for path in (PROJECT / "skills_catalog").glob("*.yaml"):
        shutil.copy(path, folder)
    try:
        ids = asins(args.rows, seed=7)
        crawl, changed = work / "crawl.csv", work / "crawl-changed.csv"
        seconds, _ = timed(lambda: write_csv(crawl, crawl_rows(ids)))
        print(f"generated {args.rows} rows            {seconds:6.2f} s   {crawl.stat().st_size / 1e6:.1f} MB CSV")
        write_csv(changed, crawl_rows(ids, revision=1))
        import_figure("(empty store)", folder, crawl)
        import_figure("again (all unchanged)", folder, crawl)
        import_figure("changed (10 % updated)", folder, changed)
        store = folder / "imported.sqlite"
        print(f"store                               {store.stat().st_size / 1e6:6.1f} MB  {store}")

        cpu = time.process_time()
        seconds, catalog = timed(lambda: load_catalog(folder))
        print(f"load_catalog() in this process      {seconds:6.3f} s   (CPU {time.process_time() - cpu:.3f} s) "
              f"{len(catalog)} skills")
        print(f"load in a fresh interpreter         {cold_load(folder, ids[len(ids) // 2]):6.3f} s   "
              f"(imports, curated YAML, store, one lookup)")
        print(f"the same without the store          {cold_load(PROJECT / 'skills_catalog', 'B017OBJI46'):6.3f} s   "
              f"(the shipped catalog: curated YAML only)")
        lookups(catalog, ids)
        seconds, top = timed(lambda: catalog.top("pets-animals", 50))
        print(f"top('pets-animals', 50)             {seconds * 1000:6.1f} ms   {len(top)} skills")
        command_figure("catalog list --category --top 50", ["catalog", "list", "--catalog", str(folder),
                                                             "--category", "pets-animals", "--top", "50"])
        command_figure("catalog list --category (all)", ["catalog", "list", "--catalog", str(folder),
                                                          "--category", "pets-animals"])
        command_figure("run --dry-run, generate top 50", ["run", "--dry-run", str(top_persona(work)), "--lab",
                                                            str(PROJECT / "lab.example.yaml"), "--catalog",
                                                            str(folder)])
        seconds, everything = timed(lambda: list(catalog.skills.values()))
        print(f"every skill (catalog.skills.values) {seconds:6.2f} s   {len(everything)} skills")
        parse, build = eager_jsonl(folder, catalog)
        print(f"for comparison, eager JSON Lines    {parse + build:6.2f} s   ({parse:.2f} s json.loads, "
              f"{build:.2f} s Skill.model_construct)")
    finally:
        if args.keep is None:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
