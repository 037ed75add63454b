"""The worker images (containers/*.def) and their shared install script (containers/install.sh).

No Apptainer here: the fast tests read the definition files; the e2e test runs install.sh, as the images'
%post does, into a fresh venv (with the CPU torch 2.13.0 that lies on this machine's disk).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
INSTALL_SH = CONTAINERS / "install.sh"
SRC_IN_IMAGE = "/opt/oellm-src"
# def file -> the pytorch.org wheel index family it must name
DEFS = {"nvidia.def": "cu", "rocm.def": "rocm", "jupiter.def": "cu", "lighteval.def": "cu", "bigcodebench.def": "cu"}
# What a wheel build of oellm needs (pyproject: packages = ["oellm"], force-include templates + clusters.json)
PROJECT_FILES = ["pyproject.toml", "README.md", "oellm", "templates", "clusters.json", "containers/install.sh"]


def parse_def(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(header, sections) of an Apptainer definition file: `Key: value` lines before the first `%section`,
    then each section's body by name."""
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("%"):
            current = stripped[1:].split()[0].lower()
            sections.setdefault(current, "")
        elif current is not None:
            sections[current] += line + "\n"
        elif stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition(":")
            header[key.strip().lower()] = value.split("#")[0].strip()
    return header, sections


def files_section(sections: dict[str, str]) -> dict[str, str]:
    pairs = (line.split() for line in sections.get("files", "").splitlines())
    return {p[0]: p[1] for p in pairs if p and not p[0].startswith("#")}


def pyproject_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert m, "no version in pyproject.toml"
    return m.group(1)


@pytest.mark.fast
@pytest.mark.parametrize("name", sorted(DEFS))
def test_def_file_builds_from_docker_and_copies_the_project(name: str) -> None:
    header, sections = parse_def(CONTAINERS / name)
    assert header.get("bootstrap") == "docker"
    assert header.get("from")
    files = files_section(sections)
    for rel in PROJECT_FILES:
        assert (REPO / rel).exists(), rel
        assert files.get(rel) == f"{SRC_IN_IMAGE}/{rel}", f"{name}: %files must copy {rel}"


@pytest.mark.fast
@pytest.mark.parametrize("name", sorted(DEFS))
def test_def_file_installs_with_install_sh_into_a_venv_first_on_path(name: str) -> None:
    _, sections = parse_def(CONTAINERS / name)
    post = sections["post"]
    assert "python3 -m venv /opt/venv" in post
    assert f"{SRC_IN_IMAGE}/containers/install.sh /opt/venv/bin/python" in post
    assert re.search(r"TORCH_SPEC='torch==[\d.]+'", post), f"{name}: pin torch"
    index = re.search(r"TORCH_INDEX_URL='https://download\.pytorch\.org/whl/([a-z]+)[\d.]+'", post)
    assert index and index.group(1) == DEFS[name], f"{name}: torch index must be a {DEFS[name]} one"
    env = sections["environment"]
    assert "export PATH=/opt/venv/bin:$PATH" in env  # clusters.json's container.python is "python3"
    assert "export PYTHONNOUSERSITE=1" in env
    assert "python3 -m oellm --help" in sections["test"]
    assert "oellm.version" in post  # the label, written from the installed package
    for section in ("post", "environment", "test", "runscript"):  # run by /bin/sh in the image
        subprocess.run(["sh", "-n"], input=sections[section], text=True, check=True)


@pytest.mark.fast
def test_only_jupiter_targets_aarch64() -> None:
    for name in DEFS:
        header, sections = parse_def(CONTAINERS / name)
        arch = dict(line.split(None, 1) for line in sections["labels"].strip().splitlines())["oellm.arch"]
        if name == "jupiter.def":
            assert header["from"].startswith("arm64v8/"), header["from"]
            assert arch == "aarch64"
            assert '[ "$(uname -m)" = aarch64 ]' in sections["post"]
        else:
            assert not header["from"].startswith("arm64v8/")
            assert arch == "x86_64"


@pytest.mark.fast
def test_install_sh_is_valid_bash_and_refuses_without_an_interpreter(tmp_path: Path) -> None:
    subprocess.run(["bash", "-n", str(INSTALL_SH)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    proc = subprocess.run(["bash", str(INSTALL_SH)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "install.sh: FAILED: no interpreter given" in proc.stderr


_ARTIFACT = re.compile(r"(^|/)(build|dist)/|\.egg-info/?$|\.whl$")


def build_artifacts() -> set[str]:
    """Untracked or ignored build outputs in the checkout (empty where it is no git checkout)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return set()
    out = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--ignored"],
                         capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in out.splitlines() if line[:2] in ("??", "!!") and _ARTIFACT.search(line[3:])}


def run_install(venv: Path, log: Path, src: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`bash <src>/containers/install.sh <venv python>`, as the images' %post runs it (the source tree is
    the script's default, the folder above it)."""
    drop = ("PYTHON", "OELLM_SRC", "TORCH_INDEX_URL", "VIRTUAL_ENV", "PYTHONPATH")
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    # torch==2.13.0 exactly: the CPU build on this machine's disk; anything looser pulls GBs of CUDA wheels.
    environ["TORCH_SPEC"] = "torch==2.13.0"
    proc = subprocess.run(["bash", str(src / "containers" / "install.sh"), str(venv / "bin" / "python")],
                          env=environ, cwd=log.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    log.write_text(proc.stdout)
    return proc


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_install_sh_makes_a_real_install_into_a_fresh_venv(tmp_path: Path) -> None:
    before = build_artifacts()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")

    proc = run_install(venv, tmp_path / "install.log")
    assert proc.returncode == 0, proc.stdout[-4000:]

    # From tmp_path, not the checkout, so that the repo's own oellm/ cannot be what gets imported.
    help_ = subprocess.run([python, "-m", "oellm", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert help_.returncode == 0, help_.stderr
    probe = ("import json, oellm, lm_eval; from importlib.metadata import distribution; "
             "d = distribution('oellm'); "
             "print(json.dumps([oellm.__version__, oellm.__file__, d.read_text('direct_url.json')]))")
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    version, file, direct_url = json.loads(out.stdout.strip().splitlines()[-1])
    assert version == pyproject_version()
    assert Path(file).resolve().is_relative_to(venv.resolve()), f"oellm imported from {file}, not the venv"
    assert not json.loads(direct_url or "{}").get("dir_info", {}).get("editable"), "an editable install"
    assert build_artifacts() <= before, "the install left build outputs in the checkout"

    # The image's case: install.sh run from a copy holding only what the .def files' %files copy. Such a
    # copy builds; a version that disagrees with oellm.__version__ fails the verification, loudly.
    src = tmp_path / "src"
    for rel, dest in files_section(parse_def(CONTAINERS / "nvidia.def")[1]).items():
        target = src / Path(dest).relative_to(SRC_IN_IMAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (REPO / rel).is_dir() else shutil.copy2
        copy(REPO / rel, target)
    pyproject = src / "pyproject.toml"
    pyproject.write_text(re.sub(r'^version\s*=\s*"[^"]+"', 'version = "9.9.9"', pyproject.read_text(), count=1,
                                flags=re.M))
    proc = run_install(venv, tmp_path / "install-copy.log", src)
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert f"oellm.__version__ is {pyproject_version()}, pyproject.toml says 9.9.9" in proc.stdout
    assert "install.sh: FAILED: verification failed" in proc.stdout
    shutil.rmtree(venv)  # about 2 GB; pytest keeps the last runs' tmp_path
