"""docs/API.md is generated from the proto comments; it must match the contracts."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_api_doc_is_current():
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_api_doc.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
