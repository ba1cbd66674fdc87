"""The docs can be trusted: the site builds with --strict, its reference generated from the code; every
recipe shown in README.md and docs/ loads with adaptctl's own loader; the README shows
recipes/quickstart.yaml as it is and stays short; every shipped recipe is exercised by a test.

A ```yaml block whose top level has `task:` is a recipe. One that shows only part of a recipe and still
has `task:` is marked with `<!-- fragment -->` on the line before it (docs/architecture.md, Docs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import typing

import yaml
from conftest import PROJECT

README = PROJECT / "README.md"
DOCS = PROJECT / "docs"
FRAGMENT = "<!-- fragment -->"
YAML_BLOCK = re.compile(r"^(?P<indent>[ \t]*)```yaml[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)
README_LIMIT = 12 * 1024


def markdown_files() -> list:
    """The Markdown a reader sees: the README and the hand-written pages (not the generated reference)."""
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "reference" not in p.relative_to(DOCS).parts)]


def yaml_blocks(path) -> list[tuple[int, str, bool]]:
    """(line, body, marked as a fragment) for every ```yaml block of a Markdown file."""
    text = path.read_text()
    blocks = []
    for found in YAML_BLOCK.finditer(text):
        line = text.count("\n", 0, found.start()) + 1
        before = text[:found.start()].rstrip().rsplit("\n", 1)[-1].strip()
        indent = found.group("indent")
        body = "".join(row.removeprefix(indent) for row in found.group("body").splitlines(keepends=True))
        blocks.append((line, body, before == FRAGMENT))
    return blocks


def is_recipe(body: str) -> bool:
    try:
        document = yaml.safe_load(body)
    except yaml.YAMLError:
        return False   # not YAML on its own (a snippet include): nothing a reader could load
    return isinstance(document, dict) and "task" in document


def test_the_site_builds_strict_with_the_reference_generated_from_the_code(tmp_path):
    # A copy, so that the build neither writes into docs/ nor races `make docs`.
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("reference"))
    shutil.copy(PROJECT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "recipes").symlink_to(PROJECT / "recipes")   # what pages include with --8<--
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    generate = subprocess.run([sys.executable, str(PROJECT / "scripts" / "gen_docs.py"), str(tmp_path / "docs")],
                              check=False, capture_output=True, text=True, timeout=120, env=env)
    assert generate.returncode == 0, generate.stderr
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(tmp_path / "mkdocs.yml"),
                            "--site-dir", str(tmp_path / "site")], check=False, capture_output=True, text=True, timeout=120, env=env)
    assert build.returncode == 0, build.stderr[-4000:]

    site = tmp_path / "site"
    assert "quickstart-tickets" in (site / "getting-started" / "index.html").read_text(), "the included recipe"
    assert "fonts.googleapis" not in (site / "index.html").read_text(), "a page that fetches fonts is not offline"
    recipe_page = (tmp_path / "docs" / "reference" / "recipe.md").read_text()
    for section, fields in recipe_sections().items():
        missing = [name for name in fields if f"| `{name}` |" not in recipe_page]
        assert not missing, f"recipe reference lacks {section.__name__}: {missing}"
    cli_page = (tmp_path / "docs" / "reference" / "cli.md").read_text()
    assert all(f"## `adaptctl {name}`" in cli_page or f"## `adaptctl {name} " in cli_page for name in cli_commands())


def recipe_sections() -> dict:
    """Every pydantic section a recipe may hold, with its field names."""
    from pydantic import BaseModel

    from adaptctl.recipe.schema import Recipe

    def sections_in(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [s for arg in typing.get_args(annotation) for s in sections_in(arg)]

    found, queue = {}, [Recipe]
    while queue:
        model = queue.pop()
        if model not in found:
            found[model] = list(model.model_fields)
            queue += [s for field in model.model_fields.values() for s in sections_in(field.annotation)]
    return found


def cli_commands() -> list[str]:
    import typer

    from adaptctl.cli import app

    return list(typer.main.get_command(app).commands)


def test_every_recipe_shown_in_the_readme_and_the_docs_loads(tmp_path):
    from adaptctl.core.errors import UserError
    from adaptctl.recipe.loader import load_recipe

    problems, checked = [], 0
    for path in markdown_files():
        for line, body, fragment in yaml_blocks(path):
            if fragment or not is_recipe(body):
                continue
            recipe = tmp_path / f"{path.stem}-{line}.yaml"
            recipe.write_text(body)
            try:
                load_recipe(recipe)
            except UserError as error:
                problems.append(f"{path.relative_to(PROJECT)}:{line}: {error.render()}")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 5, f"only {checked} recipe blocks found: is the pattern still right?"


def test_a_fragment_marker_exempts_a_block_and_a_recipe_block_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n```yaml\ntask: classification\nname: x\n```\n\n" + FRAGMENT + "\n```yaml\ntask: causal-lm\n```\n"
                    "\n- a list item:\n\n    ```yaml\n    data: {text: body}\n    ```\n")
    blocks = yaml_blocks(page)
    assert [(line, fragment) for line, _, fragment in blocks] == [(3, False), (9, True), (15, False)]
    assert [is_recipe(body) for _, body, _ in blocks] == [True, True, False]


def test_the_readme_shows_the_quickstart_recipe_as_it_is_and_stays_short():
    bodies = [body for _, body, _ in yaml_blocks(README) if is_recipe(body)]
    assert bodies == [(PROJECT / "recipes" / "quickstart.yaml").read_text()]
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; move details into docs/ (limit {README_LIMIT})"


def test_the_readmes_links_lead_to_files_that_exist():
    text = README.read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:|#", t)]
    assert targets, "the README links to the docs pages"
    assert [t for t in targets if not (PROJECT / t).exists()] == []


def test_every_shipped_recipe_is_exercised_by_a_test():
    tests = {p: p.read_text() for p in (PROJECT / "tests").glob("*.py") if p.name != "test_docs.py"}
    unexercised = [r.name for r in sorted((PROJECT / "recipes").glob("*.yaml"))
                   if not any(r.name in text for text in tests.values())]
    assert unexercised == [], f"recipes/ files no test names: {unexercised} (add a test that runs or loads them)"
