"""``metrics.web_config``: the exporter-toolkit's format read strictly, each problem naming its key."""
from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import yaml

from edge_infer.errors import InvalidConfig
from edge_infer.ops.web_auth import credentials
from edge_infer.ops.web_config import load_web_config
from tests.support.tls import bcrypt_hash

KEY = "metrics.web_config"



def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def problems(tmp_path: Path, doc) -> dict[str, str]:
    with pytest.raises(InvalidConfig) as e:
        load_web_config(write(tmp_path, doc))
    return {p.key: p.message for p in e.value.problems}


def test_a_full_file_reads_with_paths_taken_against_its_own_folder(tmp_path, pki):
    (tmp_path / "tls").mkdir()
    for src in (pki.cert, pki.key, pki.ca):
        (tmp_path / "tls" / src.name).write_bytes(src.read_bytes())
    hashed = bcrypt_hash("pw")
    web = load_web_config(write(tmp_path, {
        "tls_server_config": {"cert_file": "tls/server.pem", "key_file": "tls/server.key", "min_version": "TLS13",
                              "client_auth_type": "VerifyClientCertIfGiven", "client_ca_file": "tls/ca.pem"},
        "http_server_config": {"http2": False, "headers": {"X-Frame-Options": "deny", "X-XSS-Protection": ""}},
        "basic_auth_users": {"prometheus": hashed}}))
    assert web.tls.cert_file == tmp_path / "tls" / "server.pem"
    assert web.context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.context.verify_mode == ssl.CERT_OPTIONAL
    assert web.headers == (("X-Frame-Options", "deny"),)  # blank: unset
    assert web.users == {"prometheus": hashed.encode()}
    assert set(web.files()) == {tmp_path / "web.yml", *(tmp_path / "tls" / n for n in ("server.pem", "server.key",
                                                                                       "ca.pem"))}


def test_an_empty_file_is_plain_http_without_auth(tmp_path):
    (tmp_path / "web.yml").write_text("")
    web = load_web_config(tmp_path / "web.yml")
    assert (web.tls, web.context, web.users, web.headers) == (None, None, {}, ())


def test_unknown_keys_are_errors_naming_the_key(tmp_path, pki):
    got = problems(tmp_path, {"tls_server_config": {"cert_file": str(pki.cert), "key_file": str(pki.key),
                                                    "certfile": "x"},
                              "http_server_config": {"http3": True, "headers": {"X-Powered-By": "me"}},
                              "basic_auth_user": {}})
    assert got == {f"{KEY}.tls_server_config.certfile": "unknown key",
                   f"{KEY}.http_server_config.http3": "unknown key",
                   f"{KEY}.http_server_config.headers.X-Powered-By": got[f"{KEY}.http_server_config.headers.X-Powered-By"],
                   f"{KEY}.basic_auth_user": "unknown key"}
    assert "cannot be configured" in got[f"{KEY}.http_server_config.headers.X-Powered-By"]


def test_a_missing_certificate_or_key_is_named(tmp_path, pki):
    got = problems(tmp_path, {"tls_server_config": {"cert_file": "nope.pem", "key_file": str(pki.key)}})
    assert list(got) == [f"{KEY}.tls_server_config.cert_file"]
    assert f"cannot load {tmp_path / 'nope.pem'}" in got[f"{KEY}.tls_server_config.cert_file"]
    assert problems(tmp_path, {"tls_server_config": {"cert_file": str(pki.cert)}}) == {
        f"{KEY}.tls_server_config.key_file": "required"}
    assert list(problems(tmp_path, {"tls_server_config": {}})) == [f"{KEY}.tls_server_config.cert_file"]
    # A key that is not the certificate's.
    got = problems(tmp_path, {"tls_server_config": {"cert_file": str(pki.ca), "key_file": str(pki.key)}})
    assert list(got) == [f"{KEY}.tls_server_config.cert_file"]


def test_bad_hashes_and_user_names_are_named(tmp_path):
    got = problems(tmp_path, {"basic_auth_users": {"alice": "s3cret", "bob": "$2y$10$short", "": bcrypt_hash("x"),
                                                   "carol": bcrypt_hash("ok")}})
    assert set(got) == {f"{KEY}.basic_auth_users.alice", f"{KEY}.basic_auth_users.bob", f"{KEY}.basic_auth_users."}
    assert "must be a bcrypt hash" in got[f"{KEY}.basic_auth_users.alice"]
    assert list(problems(tmp_path, {"basic_auth_users": ["alice"]})) == [f"{KEY}.basic_auth_users"]


def test_what_this_server_cannot_honour_is_refused_by_name_not_ignored(tmp_path, pki):
    tls = {"cert_file": str(pki.cert), "key_file": str(pki.key)}
    got = problems(tmp_path, {"tls_server_config": {**tls, "cert": "PEM", "cipher_suites": ["TLS_AES_128_GCM_SHA256"],
                                                    "curve_preferences": ["X25519"], "client_allowed_sans": ["a"]},
                              "rate_limit": {"interval": "1s", "burst": 5}})
    assert got[f"{KEY}.tls_server_config.cert"] == "inline PEM is not supported: use cert_file"
    assert got[f"{KEY}.tls_server_config.cipher_suites"].startswith("not supported")
    assert set(got) == {f"{KEY}.tls_server_config.{k}" for k in ("cert", "cipher_suites", "curve_preferences",
                                                                 "client_allowed_sans")} | {f"{KEY}.rate_limit"}
    got = problems(tmp_path, {"tls_server_config": {**tls, "client_auth_type": "RequireAnyClientCert",
                                                    "min_version": "TLS13", "max_version": "TLS12"}})
    assert set(got) == {f"{KEY}.tls_server_config.client_auth_type", f"{KEY}.tls_server_config.max_version"}
    got = problems(tmp_path, {"tls_server_config": {**tls, "client_ca_file": str(pki.ca)}})
    assert "without a client auth policy" in got[f"{KEY}.tls_server_config.client_auth_type"]
    got = problems(tmp_path, {"tls_server_config": {**tls, "client_auth_type": "RequireAndVerifyClientCert"}})
    assert list(got) == [f"{KEY}.tls_server_config.client_ca_file"]


def test_an_unreadable_or_invalid_file_is_named(tmp_path):
    with pytest.raises(InvalidConfig) as e:
        load_web_config(tmp_path / "absent.yml")
    assert e.value.problems[0].key == KEY and "cannot read" in e.value.problems[0].message
    (tmp_path / "web.yml").write_text("basic_auth_users: [\n")
    with pytest.raises(InvalidConfig) as e:
        load_web_config(tmp_path / "web.yml")
    assert e.value.problems[0].key == KEY and "invalid YAML" in e.value.problems[0].message


@pytest.mark.parametrize("header, expected", [
    ("Basic dTpwOnE=", ("u", "p:q")),  # the password may hold colons
    ("basic  dTo= ", ("u", "")),
    ("Bearer dTpw", None), ("Basic !!!", None), ("Basic dXNlcg==", None), (None, None), ("Basic /w==", None)])
def test_credentials_are_read_from_a_basic_authorization_header(header, expected):
    assert credentials(header) == expected
