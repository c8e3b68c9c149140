"""The README's configuration reference is generated from the code and must stay in sync."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from relance_runtime.catalog import variables

REPO = Path(__file__).resolve().parents[2]


def config_section() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- config:start -->\n(.*?)<!-- config:end -->", readme, flags=re.S)
    assert match, "README.md lost its configuration markers"
    return match.group(1)


def test_readme_documents_every_variable_as_the_code_defines_it() -> None:
    generated = subprocess.run(
        [str(Path(sys.executable).with_name("relance")), "config", "--markdown"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert config_section() == generated, "run `make docs` to regenerate the README table"
    for variable in variables():
        assert f"`{variable.name}`" in config_section()


def test_every_variable_is_explained() -> None:
    missing = [v.name for v in variables() if not v.description]
    assert not missing, f"settings without a description: {missing}"
