"""Resumable, checked downloads (kdinv.data.download.fetch_file) against a local HTTP server."""

import hashlib
import os

import pytest
from http_server import FileServer

from kdinv.data.download import ChecksumError, DownloadError, fetch_file, md5sum

BODY = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
MD5 = hashlib.md5(BODY).hexdigest()


def test_fetches_and_verifies(tmp_path):
    with FileServer({"/data.zip": BODY}) as server:
        out = fetch_file(f"{server.url}/data.zip", tmp_path / "data.zip", md5=MD5, size=len(BODY), backoff_s=0)
    assert out.read_bytes() == BODY
    assert not (tmp_path / "data.zip.part").exists()


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path):
    with FileServer({"/data.zip": BODY}) as server:
        server.cut_after["/data.zip"] = 1_000_000
        fetch_file(f"{server.url}/data.zip", tmp_path / "data.zip", md5=MD5, size=len(BODY), backoff_s=0)
    assert (tmp_path / "data.zip").read_bytes() == BODY
    assert server.requests == [("/data.zip", None), ("/data.zip", "bytes=1000000-")]


def test_a_partial_file_survives_a_failed_job_and_the_next_run_continues_it(tmp_path):
    dest = tmp_path / "data.zip"
    with FileServer({"/data.zip": BODY}) as server:
        server.cut_after["/data.zip"] = 2_000_000
        with pytest.raises(DownloadError, match=r"data.zip: .*2000000.*partial file .*data.zip.part is kept"):
            fetch_file(f"{server.url}/data.zip", dest, md5=MD5, size=len(BODY), retries=1)
        assert not dest.exists()
        assert (tmp_path / "data.zip.part").stat().st_size == 2_000_000
        fetch_file(f"{server.url}/data.zip", dest, md5=MD5, size=len(BODY), retries=1)
    assert dest.read_bytes() == BODY
    assert server.requests[-1] == ("/data.zip", "bytes=2000000-")


def test_a_server_without_ranges_restarts_the_file(tmp_path):
    (tmp_path / "data.zip.part").write_bytes(b"garbage that is not the start")
    with FileServer({"/data.zip": BODY}, ranges=False) as server:
        fetch_file(f"{server.url}/data.zip", tmp_path / "data.zip", md5=MD5, size=len(BODY))
    assert (tmp_path / "data.zip").read_bytes() == BODY


def test_a_corrupt_mirror_is_refused_and_nothing_is_kept(tmp_path):
    bad = bytearray(BODY)
    bad[123] ^= 0xFF
    with FileServer({"/data.zip": bytes(bad)}) as server, pytest.raises(ChecksumError) as err:
        fetch_file(f"{server.url}/data.zip", tmp_path / "data.zip", md5=MD5, retries=2, backoff_s=0)
    message = str(err.value)
    assert "data.zip" in message and MD5 in message and hashlib.md5(bad).hexdigest() in message
    assert "gave up after 2 attempts" in message
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_size_is_refused(tmp_path):
    with FileServer({"/data.zip": BODY}) as server, pytest.raises(
        ChecksumError, match=f"data.zip: {len(BODY)} bytes .*expected {len(BODY) - 1}"
    ):
        fetch_file(f"{server.url}/data.zip", tmp_path / "data.zip", size=len(BODY) - 1, retries=1)


def test_a_missing_file_fails_at_once_with_the_url(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match=r"data.zip: HTTP error 404 .*/data.zip.*after 1 attempt\]"):
            fetch_file(f"{server.url}/data.zip", tmp_path / "data.zip", retries=5, backoff_s=0)
        assert len(server.requests) == 1  # a 404 is not retried


def test_a_verified_file_is_not_fetched_again(tmp_path):
    dest = tmp_path / "data.zip"
    dest.write_bytes(BODY)
    with FileServer({}) as server:
        fetch_file(f"{server.url}/data.zip", dest, md5=MD5)
        assert server.requests == []
    dest.write_bytes(b"stale")
    with FileServer({"/data.zip": BODY}) as server:
        fetch_file(f"{server.url}/data.zip", dest, md5=MD5)
    assert md5sum(dest) == MD5


def test_file_urls(tmp_path):
    src = tmp_path / "mirror" / "data.zip"
    src.parent.mkdir()
    src.write_bytes(BODY)
    out = fetch_file(src.as_uri(), tmp_path / "out" / "data.zip", md5=MD5, size=len(BODY))
    assert out.read_bytes() == BODY
