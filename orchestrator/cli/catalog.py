"""`orchestrator catalog`: import crawls of the skill store into the catalog, and list what it holds.

Listings go to stdout; the import's report goes to stderr, with anything from the crawl escaped for
the terminal. Exit code 2 for a file that cannot be imported or an import refused for its rejected
rows (nothing is written then); 1 when another import holds the catalog or the disk is full.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.options import CONTEXT_SETTINGS, InputError, reports_errors
from orchestrator.core import settings
from orchestrator.core.safe_text import for_output, for_terminal

if TYPE_CHECKING:
    from orchestrator.analysis.query import OutputFormat
    from orchestrator.catalog.crawl import ImportResult
    from orchestrator.catalog.skills import Ranking

#: Rejected rows and curated conflicts listed without --verbose.
SHOWN_ROWS = 20
LIST_COLUMNS = ("id", "category", "origin", "name", "invocation_name", "developer")
RANKED_COLUMNS = ("rank", "id", "category", "origin", "name", "invocation_name", "type", "reviews", "rating",
                  "developer")


def catalog_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--catalog", "catalog_dir", type=click.Path(file_okay=False, path_type=Path),
        default=lambda: settings.project_home() / "skills_catalog", show_default="skills_catalog/",
        help="Folder of the skills catalog (curated YAML files, and the imported store it holds).",
    )(func)


def parse_mapping(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, equals, column = value.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{value!r} is not FIELD=COLUMN")
        pairs.append((name.strip(), column.strip()))
    return pairs


@click.group(context_settings=CONTEXT_SETTINGS)
def catalog() -> None:
    """Import crawls of the Alexa skill store into the skills catalog, and list the catalog.

    The curated skills are the YAML files of the catalog folder; imported skills go to the
    imported store beside them (imported.sqlite). A curated record wins over an imported one.
    """


@catalog.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@catalog_option
@click.option("--format", "fmt", type=click.Choice(["auto", "csv", "json", "jsonl"]), default="auto",
              show_default=True, help="The file's format; `auto` goes by its suffix (.csv, .json, .jsonl, .ndjson).")
@click.option("--map", "mappings", multiple=True, metavar="FIELD=COLUMN", callback=parse_mapping,
              help="Take FIELD from COLUMN instead of the default column names; repeat for several fields. "
                   "An empty COLUMN leaves the field out. sample_utterances and permissions take several columns "
                   "(repeat the option).")
@click.option("--category", default=None,
              help="Catalog category (persona slug, e.g. pets-animals) of the rows whose file gives none and whose "
                   "store category is not mapped; a re-import with another one moves those skills.")
@click.option("--source", default=None,
              help="Provenance recorded for rows without a source column [default: the file's name].")
@click.option("--max-rejected", type=click.IntRange(min=0), default=0, show_default=True,
              help="Import the valid rows when at most this many rows are rejected. With more (by default: "
                   "any), nothing is imported and the exit code is 2.")
@click.option("--dry-run", is_flag=True, help="Check the file and report what would change; write nothing.")
@click.option("-v", "--verbose", is_flag=True, help=f"List every rejected row (the first {SHOWN_ROWS} otherwise).")
@reports_errors
def import_(file: Path, catalog_dir: Path, fmt: str, mappings: list[tuple[str, str]], category: str | None,
            source: str | None, max_rejected: int, dry_run: bool, verbose: bool) -> None:
    """Import a crawl of the skill store (CSV, JSON or JSON Lines) into the catalog, merging by id.

    \b
    Columns are found by name, whatever their case and separators:
      id                  asin, skill_id, id (without one: the ASIN, else slug:CATEGORY/DEVELOPER/NAME)
      name                name, title, skill_name (required)
      invocation_name     invocation_name, invocation, launch_phrase (custom skills need one)
      skill_type          skill_type, type: custom, smart home, flash briefing, music (default: custom;
                          smart_home, flash_briefing or music for uninvoked skills of those store categories)
      category            category: a study category as it is, or the store's category (or --category)
      store_category      store_category;  store_subcategory: sub_category, subcategory
      developer           developer, vendor, vendor_name, developer_name, author
      sample_utterances   sample_utterances, example_phrases, example_interactions, utterances,
                          or numbered columns ("Example Interaction 1", "Example Interaction 2", ...)
      account_linking     account_linking, account_linking_required (yes/no, or "Account linking required")
      permissions         permissions
      rating, review_count  rating, stars;  review_count, num_of_reviews, reviews, number_of_ratings ("1,234")
      privacy_policy_url, terms_url, in_app_purchasing, release_date, description, source, retrieved, notes
    A list field is a JSON or Python-style list (["a", "b"] or ['a', 'b']), or text separated by `|`
    or new lines. An empty cell or the text `null` is a missing value.

    \b
    Store categories become study categories by store_categories.csv (the catalog folder's, else the
    shipped one); a skill of a category it does not map keeps the store's (as "games-trivia").
    Sample utterances are stored cleaned (no wake word, quotes or bracketed remarks), the crawl's
    text beside them. A new id is added. A known id is updated: the fields the file has a column for
    take the file's values, the others keep the stored ones; a skill whose category changes is
    reported. An id that a curated YAML file has is skipped (the curated record wins) and reported.
    Each rejected row is reported with its number (a spreadsheet's row for CSV, with the header as
    row 1; the line for JSON Lines; the item, from 1, of a JSON array), the field and the reason. The
    store is replaced whole or not at all. One import runs at a time: another one waits up to 10 s
    for it, then gives up (exit code 1).

    \b
    orchestrator catalog import crawl.csv --dry-run
    orchestrator catalog import crawl.csv --map store_category=Category --map category= --category dating
    """
    from orchestrator.catalog.crawl import ImportBusy, ImportOptions, TooManyRejected, import_crawl
    from orchestrator.core.durable import OutputError, OutputRefused

    options = ImportOptions(mappings=mappings, category=category, source=source, fmt=None if fmt == "auto" else fmt,
                            max_rejected=max_rejected, dry_run=dry_run)
    try:
        result = import_crawl(catalog_dir, file, options)
    except TooManyRejected as exc:
        _report(exc.result, verbose)
        raise InputError(str(exc)) from None
    except OutputRefused as exc:
        raise InputError(str(exc)) from None
    except (ImportBusy, OutputError) as exc:
        raise click.ClickException(str(exc)) from None
    _report(result, verbose)
    if dry_run:
        click.echo("dry run: nothing written", err=True)
    elif not result.written:
        click.echo(f"{result.store}: nothing to change", err=True)


def _report(result: ImportResult, verbose: bool) -> None:
    def echo(text: str) -> None:
        click.echo(for_terminal(text), err=True)

    for stale in result.removed:
        echo(f"{stale}: removed, the temporary store of an earlier import that did not finish")
    if result.carried_over is not None:
        echo(f"{result.store}: layout {result.carried_over} from an older orchestrator; its {result.stored} "
             f"skill(s) are carried over to the current layout")
    echo(f"{result.path}: {result.rows} row(s): {result.added} added, {result.updated} updated, "
         f"{result.unchanged} unchanged, {len(result.curated)} kept curated, {result.rejected} rejected")
    echo("  columns: " + ", ".join(f"{name} <- {' + '.join(map(repr, columns))}"
                                   for name, columns in result.columns.items()))
    if result.mapping is not None and ({"store_category", "store_subcategory"} & set(result.columns)
                                       or "category" in result.columns):
        echo(f"  store categories mapped by {result.mapping}")
    if result.recategorised:
        echo(f"  {len(result.recategorised)} stored skill(s) move to another category:")
    for line in _limited([*map(str, result.recategorised)], verbose, "moves"):
        echo(f"  {line}")
    for line in _limited([*map(str, result.curated)], verbose, "curated ids"):
        echo(f"  {line}")
    for line in _limited([*map(str, result.rejections)], verbose, "reasons"):
        echo(f"  {line}")
    if result.written:
        echo(f"{result.store}: {result.stored} imported skill(s)")


def _limited(lines: list[str], verbose: bool, what: str) -> Iterator[str]:
    shown = lines if verbose else lines[:SHOWN_ROWS]
    yield from shown
    if len(lines) > len(shown):
        yield f"… and {len(lines) - len(shown)} more {what} (--verbose lists them all)"


@catalog.command("list")
@catalog_option
@click.option("--category", default=None, help="Only the skills of this category.")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="Only the category's N best-ranked skills, with their rank (needs --category).")
@click.option("--rank", "ranking", type=click.Choice(["reviews", "rating", "catalog"]), default="reviews",
              show_default=True, help="The ranking of --top: by number of reviews (then rating), by rating (then "
                                      "reviews), or curated files' order then id. Ties go to curated order, then id.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "jsonl"]), default="table",
              show_default=True, help="Output format.")
@reports_errors
def list_(catalog_dir: Path, category: str | None, top: int | None, ranking: Ranking, fmt: OutputFormat) -> None:
    """List the catalog's skills by category: curated ones first, then imported ones by id.

    With --top N, a category's N best skills in the order `generate` takes them, with rank,
    number of reviews and rating.
    """
    from orchestrator.analysis.query import write_rows
    from orchestrator.catalog.skills import load_catalog

    skills = load_catalog(catalog_dir)
    categories = sorted(skills.categories())
    if category is not None and category not in categories:
        raise InputError(f"unknown category {category!r}; the catalog has: {', '.join(categories)}")
    if top is not None:
        if category is None:
            raise InputError("--top ranks the skills of one category: give --category too")
        ranked = (
            (rank, s.id, s.category, "curated" if s.id in skills.curated else "imported", s.name, s.invocation_name,
             s.skill_type, s.review_count, s.rating, s.developer)
            for rank, s in enumerate(skills.top(category, top, ranking), start=1)
        )
        write_rows(sys.stdout, *for_output(RANKED_COLUMNS, ranked, fmt), fmt)
        return
    rows = (
        (s.id, s.category, "curated" if s.id in skills.curated else "imported", s.name, s.invocation_name,
         s.developer)
        for c in ([category] if category else categories)
        for s in skills.in_category(c)
    )
    write_rows(sys.stdout, *for_output(LIST_COLUMNS, rows, fmt), fmt)


@catalog.command("upgrade")
@catalog_option
@reports_errors
def upgrade(catalog_dir: Path) -> None:
    """Carry an imported store written by an older orchestrator over to the current layout.

    The next import does this too; a store already in the current layout is left alone.
    """
    from orchestrator.catalog.crawl import ImportBusy, upgrade_store
    from orchestrator.catalog.skills import IMPORTED_STORE, STORE_VERSION
    from orchestrator.core.durable import OutputError

    try:
        layout, count = upgrade_store(catalog_dir)
    except (ImportBusy, OutputError) as exc:
        raise click.ClickException(str(exc)) from None
    store = catalog_dir / IMPORTED_STORE
    if layout is None:
        click.echo(f"{store}: no imported store, nothing to upgrade", err=True)
    elif layout == STORE_VERSION:
        click.echo(f"{store}: already layout {STORE_VERSION} ({count} skill(s)), nothing to change", err=True)
    else:
        click.echo(f"{store}: {count} skill(s) carried over from layout {layout} to layout {STORE_VERSION}", err=True)
