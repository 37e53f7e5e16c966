"""Fetch MaxMind's GeoIP2-City test database for the test suite.

Usage: python tests/data/fetch_geoip_test_db.py OUT_PATH

The database is fake, published test data that ships inside the geoip2 sdist on PyPI,
so we fetch it through pip (the one registry client every machine has) rather than
committing a binary. Does nothing if OUT_PATH already exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "geoip2"
VERSION = "5.3.0"
MEMBER = f"geoip2-{VERSION}/tests/data/test-data/GeoIP2-City-Test.mmdb"
# Pinned so a re-published or tampered sdist cannot silently change what tests assert.
SHA256 = "b9dd842ade0411ebd25619ba431e5e3b737126279210e297e804fc0c785673fb"


class FetchError(Exception):
    """Downloading or unpacking the test database failed."""


def _download_sdist(dest: Path) -> Path:
    # `--no-binary :all:` would also force pip to build geoip2's build backend (uv_build)
    # from source, which fails; restricting it to geoip2 gets just the sdist.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        PACKAGE,
        "--disable-pip-version-check",
        f"{PACKAGE}=={VERSION}",
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FetchError(f"pip download failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    tarball = dest / f"{PACKAGE}-{VERSION}.tar.gz"
    if not tarball.is_file():
        raise FetchError(f"pip download did not produce {tarball.name}")
    return tarball


def _extract_member(tarball: Path) -> bytes:
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            member = tar.getmember(MEMBER)
        except KeyError as exc:
            raise FetchError(f"{MEMBER} not found in {tarball.name}") from exc
        fileobj = tar.extractfile(member)
        if fileobj is None:
            raise FetchError(f"{MEMBER} is not a regular file in {tarball.name}")
        with fileobj:
            return fileobj.read()


def _write_atomic(out: Path, data: bytes) -> None:
    # Temp file in the same directory so the rename is atomic: a concurrent test run
    # never sees a half-written database.
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the file is public data
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(out: str | Path) -> bool:
    """Ensure the test database exists at ``out``; return True if it was downloaded."""
    out = Path(out)
    if out.exists():
        return False
    with tempfile.TemporaryDirectory(prefix="geoip-test-db-") as tmpdir:
        data = _extract_member(_download_sdist(Path(tmpdir)))
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise FetchError(f"unexpected sha256 {digest} for {MEMBER} (want {SHA256})")
    _write_atomic(out, data)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: {Path(sys.argv[0]).name} OUT_PATH", file=sys.stderr)
        return 2
    try:
        fetched = fetch(args[0])
    except (FetchError, OSError, tarfile.TarError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'fetched' if fetched else 'already present'}: {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
