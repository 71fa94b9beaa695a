"""How magv installs: one top-level package, prompts as package data, `python -m magv`.

The wheel itself, installed non-editable and used from outside the repository, is checked by
.ci/wheel_check.sh; these tests check the same promises on the installed (editable) package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import magv
from magv.prompts import load_prompt, prompts_dir

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def prompt_names() -> list[str]:
    """The prompts in the folder magv reads them from (file names without `.j2`)."""
    return sorted(f.name[: -len(".j2")] for f in prompts_dir().iterdir() if f.name.endswith(".j2"))


def test_python_dash_m_magv_is_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "magv", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and "verify" in out.stdout


def test_prompts_are_package_data_read_with_importlib_resources(monkeypatch):
    monkeypatch.delenv("MAGV_PROMPTS_DIR", raising=False)
    folder = resources.files("magv.agent_prompts")
    assert str(prompts_dir()) == str(folder)
    assert prompt_names() == ["investigator", "judge", "responder", "reverse"]
    prompt = load_prompt("responder")
    assert prompt.source == folder.joinpath("responder.j2").read_text(encoding="utf-8")
    assert prompt.where.endswith("responder.j2")


def test_magv_prompts_dir_still_points_at_another_folder(tmp_path, monkeypatch):
    original = load_prompt("reverse")
    (tmp_path / "reverse.j2").write_text("VARIANT {{ k }}\n" + original.source)
    monkeypatch.setenv("MAGV_PROMPTS_DIR", str(tmp_path))
    variant = load_prompt("reverse")
    assert variant.hash != original.hash
    assert variant.render(domain_description="d", response="r", base_question=None, k=2).startswith(
        "VARIANT 2"
    )
    assert prompt_names() == ["reverse"]


def test_flows_install_under_magv():
    import magv.flows.pipeline

    assert Path(magv.flows.pipeline.__file__).resolve().parent == REPO / "flows"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["magv.flows"] == "flows"


def test_every_package_of_the_repository_is_in_the_wheel_list():
    """The package list is explicit (flows/ and prompts/ are mapped from outside magv/): a new
    subpackage must be added to it, or the wheel lacks it."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(REPO).parts) for p in (REPO / "magv").rglob("*")
             if p.is_dir() and "__pycache__" not in p.parts and any(p.glob("*.py"))} | {"magv"}  # fmt: skip
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert {"magv.flows", "magv.agent_prompts"} <= listed
    assert all(name == "magv" or name.startswith("magv.") for name in listed)


def test_licence_is_an_spdx_expression_and_xgboost_pulls_no_cuda():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    xgb = [d for d in project["dependencies"] if d.startswith("xgboost")]
    # xgboost's Linux wheels require nvidia-nccl-cu12; xgboost-cpu is the same package without it.
    assert any(d.startswith("xgboost-cpu") and "sys_platform != 'darwin'" in d for d in xgb), xgb
    assert all(d.startswith("xgboost-cpu") or "sys_platform == 'darwin'" in d for d in xgb), xgb


def test_the_version_is_one():
    assert magv.__version__ == PYPROJECT["project"]["version"]
