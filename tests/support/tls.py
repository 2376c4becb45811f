"""A throw-away CA and a server certificate it signed, made with the openssl CLI, for the HTTPS tests."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bcrypt


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA's certificate: what a client trusts
    cert: Path  # the server's, for 127.0.0.1 and localhost
    key: Path
    other_ca: Path  # a CA that signed nothing here


def _run(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def make_pki(folder: Path) -> Pki | None:
    """None when there is no openssl CLI."""
    if shutil.which("openssl") is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    f = {n: str(folder / n) for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "ext.cnf",
                                     "other.key", "other.pem")}
    for key, pem, cn in (("ca.key", "ca.pem", "edge-infer test CA"), ("other.key", "other.pem", "another CA")):
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={cn}", "-keyout", f[key], "-out", f[pem])
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
         "-keyout", f["server.key"], "-out", f["server.csr"])
    Path(f["ext.cnf"]).write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run("x509", "-req", "-in", f["server.csr"], "-CA", f["ca.pem"], "-CAkey", f["ca.key"], "-CAcreateserial",
         "-days", "2", "-extfile", f["ext.cnf"], "-out", f["server.pem"])
    return Pki(Path(f["ca.pem"]), Path(f["server.pem"]), Path(f["server.key"]), Path(f["other.pem"]))


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """Cost 4 (bcrypt's least) keeps the tests quick; the daemon checks any cost the same way."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
