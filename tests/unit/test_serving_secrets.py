"""The root secret file: made once, private, atomic; every process that loads it gets the same bytes."""

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from controlplane.errors import SetupError
from serving._secrets import ROOT_SECRET_ENV, load_or_create_root_secret, root_secret_path


def test_made_once_with_mode_0600_and_then_reused(tmp_path):
    path = tmp_path / "sub" / "root_secret"
    secret = load_or_create_root_secret(path)
    assert len(secret) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_root_secret(path) == secret
    assert os.listdir(path.parent) == ["root_secret"]  # no temp file left behind


def test_concurrent_first_uses_agree_on_one_secret(tmp_path):
    path = tmp_path / "root_secret"
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_root_secret(path), range(16)))
    assert len(secrets) == 1


def test_the_env_var_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_SECRET_ENV, str(tmp_path / "from_env"))
    assert root_secret_path() == tmp_path / "from_env"
    assert root_secret_path(tmp_path / "given") == tmp_path / "given"
    load_or_create_root_secret()
    assert (tmp_path / "from_env").exists()


def test_a_secret_others_can_read_is_refused(tmp_path):
    path = tmp_path / "root_secret"
    load_or_create_root_secret(path)
    path.chmod(0o644)
    with pytest.raises(SetupError, match=f"chmod 600 {path}"):
        load_or_create_root_secret(path)


def test_a_damaged_secret_is_refused(tmp_path):
    path = tmp_path / "root_secret"
    path.write_text("not hex")
    path.chmod(0o600)
    with pytest.raises(SetupError, match="not 32 bytes of hex"):
        load_or_create_root_secret(path)
