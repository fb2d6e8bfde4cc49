"""README.zh-CN.md stays in step with README.md; docs/glossary.md is a real glossary.

What "in step" means here: the same shell commands (fenced command blocks, compared without
their comments, which are translated), the same inline commands in the quick start, the same
notebooks in the notebook table with the same "planned" markers, and links that resolve.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"
GLOSSARY = ROOT / "docs" / "glossary.md"

COMMAND_LANGS = {"bash", "sh", "shell", "console"}
CJK = re.compile(r"[\u4e00-\u9fff]")


def command_blocks(markdown: str) -> list[list[str]]:
    """The fenced shell blocks of a Markdown text, each as its commands without comments.

    >>> command_blocks("```bash\\nmake lab   # open it\\n\\nmake test\\n```\\n```\\nplain\\n```")
    [['make lab', 'make test']]
    """
    blocks = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", markdown, flags=re.M | re.S):
        if lang.lower() not in COMMAND_LANGS:
            continue
        lines = [re.sub(r"(^|\s)#.*$", "", line).strip() for line in body.splitlines()]
        blocks.append([line for line in lines if line])
    return blocks


def section(markdown: str, index: int) -> str:
    """The ``index``-th level-2 section (0 = the first ``## `` heading) of a Markdown text."""
    parts = re.split(r"^## .*$", markdown, flags=re.M)
    return parts[index + 1]


def inline_commands(markdown: str) -> list[str]:
    """Inline code spans that are shell commands (make, course, conda, pip, .venv/bin/...)."""
    spans = re.findall(r"`([^`\n]+)`", markdown)
    return [s for s in spans if re.match(r"(make|course|conda|pip|\.venv/bin/)\b", s)]


def table_rows(markdown: str) -> list[list[str]]:
    """Data rows of the Markdown tables (header and separator rows dropped), split into cells."""
    rows = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.match(r"^\|[-:| ]+\|$", line):
            continue
        if i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1]):
            continue  # a header row
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def notebook_rows(markdown: str) -> dict[str, bool]:
    """Notebook table: {notebook name: marked planned?}."""
    rows = {}
    for cells in table_rows(markdown):
        m = re.match(r"(\d\d-[a-z-]+)", cells[0])
        if m:
            rows[m.group(1)] = "planned" in cells[0] or "计划中" in cells[0]
    return rows


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def readme_zh() -> str:
    return README_ZH.read_text(encoding="utf-8")


def test_same_command_blocks(readme, readme_zh):
    blocks = command_blocks(readme)
    assert blocks, "README.md has no fenced command block: has the quick start moved?"
    assert command_blocks(readme_zh) == blocks, (
        "README.zh-CN.md's fenced command blocks differ from README.md's: copy the changed "
        "commands into README.zh-CN.md (translate only the comments)"
    )


def test_same_quick_start_commands(readme, readme_zh):
    quick_start, quick_start_zh = section(readme, 0), section(readme_zh, 0)
    missing = [c for c in inline_commands(quick_start) if f"`{c}`" not in quick_start_zh]
    assert not missing, f"README.zh-CN.md's quick start (快速开始) lacks {missing}"


def test_where_to_start_names_the_same_commands_and_docs(readme, readme_zh):
    where, where_zh = section(readme, 1), section(readme_zh, 1)
    missing = [c for c in inline_commands(where) if f"`{c}`" not in where_zh]
    missing += [
        link
        for link in re.findall(r"\]\(([^)]+)\)", where)
        if link not in where_zh and link != "README.zh-CN.md"
    ]
    assert not missing, f"README.zh-CN.md's 从哪里开始 lacks {missing}"


def test_same_notebooks_in_the_notebook_table(readme, readme_zh):
    notebooks = notebook_rows(readme)
    assert len(notebooks) >= 5, "README.md's notebook table was not found"
    assert notebook_rows(readme_zh) == notebooks, (
        "the notebook table of README.zh-CN.md (笔记本及其背后的代码) must list the same "
        "notebooks as README.md's, with *（计划中）* exactly where README.md says *(planned)*"
    )


def test_readme_links_both_ways(readme, readme_zh):
    assert "(README.zh-CN.md)" in readme and "(docs/glossary.md)" in readme
    assert "(README.md)" in readme_zh and "(docs/glossary.md)" in readme_zh


@pytest.mark.parametrize("path", [README_ZH, GLOSSARY], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    links = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in link]
    broken = [link for link in links if not (path.parent / link).exists()]
    assert not broken, f"{path.name} links to missing files: {broken}"


def test_glossary_has_80_terms_each_with_chinese():
    rows = [r for r in table_rows(GLOSSARY.read_text(encoding="utf-8")) if len(r) == 4]
    assert len(rows) >= 80, f"the glossary has {len(rows)} terms, the course promises at least 80"
    english = [r[0].lower() for r in rows]
    duplicates = sorted({e for e in english if english.count(e) > 1})
    assert not duplicates, f"terms listed twice: {duplicates}"
    no_chinese = [r[0] for r in rows if not CJK.search(r[1]) and not CJK.search(r[2])]
    assert not no_chinese, f"terms without a Chinese rendering or note: {no_chinese}"
    bad_nb = [r[0] for r in rows if not re.fullmatch(r"0\d", r[3])]
    assert not bad_nb, f"terms without a notebook number (00-09): {bad_nb}"


@pytest.mark.parametrize(
    "english, chinese",
    [
        ("token", "词元"),
        ("embedding", "嵌入"),
        ("attention", "注意力"),
        ("perplexity", "困惑度"),
        ("cross-entropy", "交叉熵"),
        ("gradient", "梯度"),
        ("learning rate", "学习率"),
        ("causal mask", "因果掩码"),
        ("tokenizer", "分词器"),
        ("vocabulary", "词表"),
        ("weight decay", "权重衰减"),
        ("beam search", "束搜索"),
        ("layer normalization (LayerNorm)", "层归一化"),
    ],
)
def test_glossary_uses_the_standard_renderings(english, chinese):
    rows = {r[0]: r[1] for r in table_rows(GLOSSARY.read_text(encoding="utf-8")) if len(r) == 4}
    assert english in rows, f"{english!r} is missing from the glossary"
    assert chinese in rows[english], (
        f"{english!r} should be rendered {chinese}, got {rows[english]}"
    )
