"""The README's architecture section names every module of the packages, so the map a new contributor
reads first cannot drift from the code (a module added, moved or split without a line there fails)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("radgr", "sid_index", "trainer", "server", "loadtest", "deploy")


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Architecture"):]
    return section[: section.index("\n## ", 1)]


def _entries(layout: str) -> list[str]:
    """One entry per module line of the layout block, with its continuation lines (indented)."""
    block = layout[layout.index("```") + 3:]
    entries: list[str] = []
    for line in block[: block.index("```")].splitlines():
        if line.startswith((" ", "\t")) and entries:
            entries[-1] += " " + line.strip()
        elif line.strip():
            entries.append(line)
    return entries


def test_every_module_is_in_the_readme_layout():
    entries = _entries(_layout())
    modules = sorted(p.relative_to(ROOT) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                     if p.name != "__init__.py")
    assert len(modules) > 30

    def named(m: Path) -> bool:  # by its path, or by its file name in its folder's entry ("sid_index/data/ ...")
        return any(str(m) in e or (e.split()[0].startswith(f"{m.parent}/") and re.search(rf"\b{re.escape(m.name)}", e))
                   for e in entries)

    missing = [str(m) for m in modules if not named(m)]
    assert not missing, f"modules missing from the README's Architecture section: {missing}"
