"""The stdlib-only setup script: clear failures per step, and a stamp that makes reruns cheap."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def setup_module(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("cp_setup", ROOT / "controlplane" / "_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(module, "STAMP", tmp_path / ".venv" / ".controlplane-setup")
    return module


def test_old_python_fails_with_the_version_and_the_fix(setup_module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "version_info", (3, 10, 12))
    assert setup_module.main(["--extra", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "step 'check python' failed" in err and "needs >= 3.11" in err and "PYTHON=" in err


def test_a_failing_command_names_its_step_and_fix(setup_module):
    with pytest.raises(setup_module.StepFailed, match="step 'install dependencies' failed.*PyPI"):
        setup_module.run("install dependencies", [sys.executable, "-c", "raise SystemExit(3)"],
                         "check that PyPI is reachable")


def test_low_disk_fails_before_installing(setup_module, monkeypatch):
    monkeypatch.setattr(setup_module, "MIN_FREE_DISK_GB", 10**9)
    with pytest.raises(setup_module.StepFailed, match="check disk.*GB free"):
        setup_module.check_disk()


def test_stamp_changes_with_the_extra_so_reruns_reinstall_only_when_needed(setup_module):
    assert setup_module.wanted_stamp("cpu") == setup_module.wanted_stamp("cpu")
    assert setup_module.wanted_stamp("cpu") != setup_module.wanted_stamp("gpu")


def test_model_cache_moves_with_the_environment(setup_module, monkeypatch, tmp_path):
    monkeypatch.setenv("CONTROLPLANE_CACHE", str(tmp_path / "cache"))
    assert setup_module.model_dir() == tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"

    from controlplane._model_cache import SetupError, default_model_path

    with pytest.raises(SetupError, match="not in the cache.*make setup"):
        default_model_path()


def test_browser_install_is_skipped_when_present_and_explained_without_root(setup_module, monkeypatch, tmp_path,
                                                                            capsys):
    calls = []
    monkeypatch.setattr(setup_module, "run", lambda step, command, fix, **kw: calls.append(command))
    present = tmp_path / "present"
    present.touch()
    monkeypatch.setattr(setup_module, "BROWSER_PACKAGES", {"chromium": present, "chromium-driver": present})
    setup_module.install_browser()
    assert calls == []

    monkeypatch.setattr(setup_module, "BROWSER_PACKAGES", {"chromium": present, "chromium-driver": tmp_path / "no"})
    monkeypatch.setattr(setup_module.os, "geteuid", lambda: 1000)
    setup_module.install_browser()
    assert calls == [] and "sudo apt-get install -y chromium-driver" in capsys.readouterr().out

    monkeypatch.setattr(setup_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(setup_module.shutil, "which", lambda name: "/usr/bin/apt-get")
    setup_module.install_browser()
    assert calls == [["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium-driver"]]


def test_the_venvs_packages_are_byte_compiled_after_the_install_and_a_file_that_is_not_python_3_does_not_stop_it(
        setup_module, tmp_path):
    site_packages = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    (site_packages / "package").mkdir(parents=True)
    (site_packages / "package" / "module.py").write_text("VALUE = 1\n")
    (site_packages / "package" / "template.py").write_text("print 'python 2'\n")
    (tmp_path / ".venv" / "bin").mkdir()
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    setup_module.compile_bytecode()
    assert [path.name.split(".")[0] for path in (site_packages / "package" / "__pycache__").iterdir()] == ["module"]
