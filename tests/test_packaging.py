"""The Hydra config tree ships inside the wheel, and both entry points exist."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_the_config_tree(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("focalbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("focalbench/conf/") and n.endswith(".yaml")}
    expected = {
        f"focalbench/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert expected and expected == shipped
    assert "focalbench/conf/__init__.py" in names
    # every module, so that a package missing from pyproject's explicit list fails here
    modules = {
        f"focalbench/{p.relative_to(ROOT / 'focalbench').as_posix()}"
        for p in (ROOT / "focalbench").rglob("*.py")
    }
    assert len(modules) > 50 and not modules - names, sorted(modules - names)
