"""The docs: the README stays short, the generated pages match their sources, and the site builds strictly
(broken links and missing pages are errors)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_links_only_to_pages_that_exist():
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if not t.startswith("http") and not (REPO / t).exists()]
    assert targets and not missing, missing
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in text  # the command .ci/run runs
    assert "bash scripts/setup.sh && .venv/bin/weitiao train examples/quickstart.yaml" in text


def test_generated_pages_are_current():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "docs.py"), "--check"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_results_file_has_a_section_naming_its_machine_and_date():
    text = (REPO / "docs" / "benchmarks" / "results.md").read_text(encoding="utf-8")
    for path in sorted((REPO / "bench" / "results").glob("*.json")):
        section = text.split(f"## {path.stem}\n", 1)[1].split("\n## ", 1)[0]
        assert "- machine: " in section and "- date: " in section and "- commit: " in section


def test_the_site_builds_strictly(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is not installed: scripts/setup.sh installs the dev extras"
    proc = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], capture_output=True,
                          text=True, cwd=REPO, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin",
                                                    "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for page in ("index.html", "concepts/index.html", "zh/concepts/index.html", "reference/config/index.html",
                 "benchmarks/results/index.html", "architecture/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


def test_every_page_has_a_chinese_twin_and_both_are_in_the_nav():
    """docs/zh mirrors docs/: a page added in English without its Chinese twin (or the reverse) fails here, and
    the generated pages' twins include the English page rather than copying it (they cannot drift)."""
    import yaml

    english = {p.relative_to(REPO / "docs") for p in (REPO / "docs").rglob("*.md") if "zh" not in p.parts}
    chinese = {p.relative_to(REPO / "docs" / "zh") for p in (REPO / "docs" / "zh").rglob("*.md")}
    assert english == chinese, (sorted(map(str, english - chinese)), sorted(map(str, chinese - english)))
    for generated in ("reference/config.md", "reference/cli.md", "benchmarks/results.md"):
        assert f'--8<-- "docs/{generated}' in (REPO / "docs" / "zh" / generated).read_text(encoding="utf-8")

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from (pages(value) if isinstance(value, list) else [value])

    site = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    listed = set(pages(site["nav"]))
    assert {str(p) for p in english} <= listed and {f"zh/{p}" for p in chinese} <= listed
    assert [a["lang"] for a in site["extra"]["alternate"]] == ["en", "zh"]
