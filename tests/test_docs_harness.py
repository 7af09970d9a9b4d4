"""The rules of the docs tests: which blocks run, and which fail for want of a marker."""

from __future__ import annotations

import sys

import pytest

from tests.docs_harness import SETUP_STEPS, Block, DocsError, PageRun, _problem, parse_blocks

PAGE = """\
# A page

```python
print("runs")
```

<!-- illustrative: needs a server -->
```console
celery worker
```

- a list item:

  <!-- known-defect: the CLI drops --url here -->
  <!-- test-setup: cli-sample -->
  ```console
  $ taskstatus list
  ```

```sql
SELECT 1
```
"""


def test_blocks_with_their_lines_markers_and_indented_fences():
    blocks = parse_blocks(PAGE)
    assert [(b.line, b.lang) for b in blocks] == [
        (3, "python"),
        (8, "console"),
        (16, "console"),
        (20, "sql"),
    ]
    assert blocks[1].marks == {"illustrative": "needs a server"}
    assert blocks[2].marks == {
        "known-defect": "the CLI drops --url here",
        "test-setup": "cli-sample",
    }
    assert blocks[2].source == "$ taskstatus list\n"


def test_a_block_that_cannot_run_needs_a_reason():
    assert _problem(Block(1, "python", "")) is None
    assert _problem(Block(1, "sql", "")) is not None
    assert _problem(Block(1, "", "")) is not None
    assert _problem(Block(1, "sql", "", {"illustrative": ""})) is not None  # no reason given
    assert _problem(Block(1, "python", "", {"ilustrative": "typo"})) is not None
    assert _problem(Block(1, "python", "", {"test-setup": "no-such-step"})) is not None
    assert _problem(Block(1, "python", "", {"test-setup": next(iter(SETUP_STEPS))})) is None


def test_blocks_share_a_namespace_modules_and_called_tests(tmp_path):
    run = PageRun(tmp_path / "page.md")
    try:
        run.execute(Block(1, "python", "# pkg/mod.py\nVALUE = 41\n"))
        run.execute(Block(5, "python", "# pkg/mod.py, continued\nVALUE += 1\n"))
        run.execute(Block(9, "python", "from pkg.mod import VALUE\n"))
        with pytest.raises(AssertionError):
            run.execute(Block(13, "python", "def test_it():\n    assert VALUE == 41\n"))
        run.execute(Block(17, "console", "$ taskstatus db upgrade\n$ taskstatus list --limit 1\n"))
        with pytest.raises(DocsError):
            run.execute(Block(21, "console", "$ taskstatus list --no-such-option\n"))
    finally:
        run.close()
    assert "pkg.mod" not in sys.modules
