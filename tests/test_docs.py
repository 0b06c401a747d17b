"""README.md and docs/: every relative link and image resolves, every docs page is reachable from the README, and
the README stays a front page (at most 12 KB; the rest lives in docs/). And tests/ as docs/testing.md describes
it: a folder per engines/ package, no test file too long to read."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and ![alt](target), the target up to a space (an optional "title") or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def links(page: Path) -> list[str]:
    """The link targets of a markdown page, outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))


def local_target(page: Path, target: str) -> Path | None:
    """The file a relative link points to (None for web, mail and same-page links)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
        return None
    path = target.split("#", 1)[0].split("?", 1)[0]
    return (page.parent / path).resolve() if path else None


def test_link_parsing_finds_links_and_images_and_skips_code():
    page = ROOT / "docs" / "x.md"
    text = ('See [the VAE](vae.md#training) and ![roll](images/roll.png "a roll"), [web](https://example.org), '
            "[top](#top).\n```\n[not a link](nowhere.md)\n```\n")
    found = LINK.findall(FENCE.sub("", text))
    assert found == ["vae.md#training", "images/roll.png", "https://example.org", "#top"]
    assert [local_target(page, t) for t in found] == [ROOT / "docs" / "vae.md", ROOT / "docs" / "images" / "roll.png",
                                                      None, None]


def test_every_relative_link_and_image_resolves():
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages() for target in links(page)
              if (path := local_target(page, target)) is not None and not path.exists()]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    readme = ROOT / "README.md"
    linked = {local_target(readme, t) for t in links(readme)}
    unlinked = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").rglob("*.md")) if p.resolve() not in linked]
    assert (ROOT / "docs").is_dir() and not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_readme_is_a_front_page():
    size = (ROOT / "README.md").stat().st_size
    assert size <= 12 * 1024, f"README.md is {size} bytes; move detail into docs/ (at most 12 KB)"


def test_the_tests_mirror_engines_and_no_test_file_is_too_long_to_read():
    packages = {p.name for p in (ROOT / "engines").iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in (ROOT / "tests").iterdir() if (p / "__init__.py").is_file()}
    assert packages and not packages - folders, f"engines/ packages without a tests/ folder: {packages - folders}"
    described = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    assert all(f"`tests/{name}`" in described for name in folders), "docs/testing.md names every tests/ folder"
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in sorted((ROOT / "tests").rglob("test_*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450]
    assert not long, f"split these by concern (at most 450 lines each): {long}"
