"""``metrics.web_config``: TLS and basic auth for the HTTP port, in the Prometheus exporter-toolkit's format.

The file is the one node_exporter and Prometheus itself read (``--web.config.file``), so one file and one
habit serve a whole monitoring stack. Unknown keys are errors naming the key, as there; the few keys of that
format this server cannot honour (inline PEM, cipher and curve lists, SAN allow-lists, rate limits) are
refused by name rather than ignored. ``LiveWebConfig`` re-reads the file, and the certificate files it names,
when any of them changes (checked at each connection), so a renewed certificate or a new user needs no restart.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..config_reader import ABSENT, REQUIRED, Section, load_yaml, parsed, read, setting, show
from ..errors import ConfigError, InvalidConfig

log = logging.getLogger(__name__)

KEY = "metrics.web_config"
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
             "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's client auth policies; the two that take a certificate without verifying it have no equivalent in
# OpenSSL's server modes (and the toolkit's own docs call them insecure).
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_REFUSED = {
    "cert": "inline PEM is not supported: use cert_file", "key": "inline PEM is not supported: use key_file",
    "client_ca": "inline PEM is not supported: use client_ca_file",
    "cipher_suites": "not supported: OpenSSL's default TLS 1.2 suites are used (TLS 1.3 has its own)",
    "curve_preferences": "not supported: OpenSSL's default curves are used",
    "client_allowed_sans": "not supported: verify client certificates with client_ca_file alone",
}
# The response headers the toolkit lets a config set, with the values it accepts (None: any).
_HEADERS = {"Content-Security-Policy": None, "X-Frame-Options": ("deny", "sameorigin"),
            "X-Content-Type-Options": ("nosniff",), "X-XSS-Protection": None, "Strict-Transport-Security": None}
# What bcrypt (Go's and the Python package) accepts: $2a$, $2b$ or $2y$, a two-digit cost, 53 characters.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


@dataclass(frozen=True)
class TlsServerConfig:
    cert_file: Path = setting(REQUIRED, "the server's certificate (PEM, chain after it)")
    key_file: Path = setting(REQUIRED, "its private key (PEM)")
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] = setting(
        "NoClientCert", "client certificates")
    client_ca_file: Optional[Path] = setting(None, "the CA client certificates must chain to")
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = setting("TLS12", "lowest TLS version")
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = setting("TLS13", "highest TLS version")
    prefer_server_cipher_suites: bool = setting(True, "the server's cipher order wins")


@dataclass(frozen=True)
class HttpServerConfig:
    http2: bool = setting(True, "accepted for compatibility; this server speaks HTTP/1 (clients fall back)")
    headers: tuple[tuple[str, str], ...] = ()  # read by _parse_headers


@dataclass(frozen=True)
class WebConfig:
    """One reading of the file: its TLS context (None: plain HTTP), extra headers, and users -> bcrypt hash."""
    path: Path
    tls: Optional[TlsServerConfig]
    context: Optional[ssl.SSLContext]
    headers: tuple[tuple[str, str], ...]
    users: dict[str, bytes] = field(default_factory=dict)

    def files(self) -> tuple[Path, ...]:
        """The files whose change means a new reading."""
        t = self.tls
        return (self.path,) + (() if t is None else (t.cert_file, t.key_file) + (
            (t.client_ca_file,) if t.client_ca_file else ()))


def _parse_tls(s: Section) -> tuple[TlsServerConfig, ssl.SSLContext | None] | None:
    for key, why in _REFUSED.items():
        if s.raw(key) is not ABSENT:
            s.error(key, why)
    if s.raw("cert_file") in (ABSENT, None) and s.raw("key_file") in (ABSENT, None):
        s.error("cert_file", "required (with key_file) when tls_server_config is given")
        return None
    tls = read(s, TlsServerConfig)
    if tls.client_ca_file is not None and tls.client_auth_type == "NoClientCert":
        s.error("client_auth_type", "client_ca_file is set without a client auth policy "
                                    "(VerifyClientCertIfGiven or RequireAndVerifyClientCert)")
    if tls.client_ca_file is None and tls.client_auth_type != "NoClientCert":
        s.error("client_ca_file", f"required by client_auth_type {tls.client_auth_type}")
    if list(_VERSIONS).index(tls.min_version) > list(_VERSIONS).index(tls.max_version):
        s.error("max_version", f"must not be below min_version ({tls.min_version})")
    return tls, _context(s, tls) if parsed(tls.cert_file, tls.key_file) else None


def _parse_headers(s: Section) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in s.data.items():
        s.seen.add(name)
        if name not in _HEADERS:
            s.error(str(name), f"cannot be configured (only {', '.join(_HEADERS)})")
        elif not isinstance(value, str) or "\n" in value or "\r" in value:
            s.error(name, f"must be a one-line string, got {show(value)}")
        elif _HEADERS[name] and value.lower() not in _HEADERS[name]:
            s.error(name, f"must be one of {', '.join(_HEADERS[name])}, got {value!r}")
        elif value:  # blank: unset, as in the toolkit
            out.append((name, value))
    return tuple(out)


def _parse_users(s: Section) -> dict[str, bytes]:
    users = {}
    for user, hashed in s.data.items():
        s.seen.add(user)
        if not isinstance(user, str) or not user or ":" in user:
            s.error(str(user), "a user name must be a non-empty string without ':'")
        elif not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            s.error(user, "must be a bcrypt hash ($2y$10$ and 53 characters: htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        else:
            users[user] = hashed.encode()
    return users


def _context(s: Section, tls: TlsServerConfig) -> ssl.SSLContext | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version, ctx.maximum_version = _VERSIONS[tls.min_version], _VERSIONS[tls.max_version]
    if not tls.prefer_server_cipher_suites:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as e:
        s.error("cert_file", f"cannot load {tls.cert_file} with key_file {tls.key_file}: {e.strerror or e}")
        return None
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as e:
            s.error("client_ca_file", f"cannot load {tls.client_ca_file}: {e.strerror or e}")
            return None
        ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    return ctx


def load_web_config(path: Path) -> WebConfig:
    """Read and check the file (and load its certificates); ``InvalidConfig`` naming each bad key under
    ``metrics.web_config``. Paths in it are taken against its own folder, as the toolkit does."""
    try:
        data, file = load_yaml(path)
    except InvalidConfig as e:
        raise InvalidConfig(e.path, [ConfigError(KEY, f"{path}: {p.message}") for p in e.problems]) from e
    problems: list[ConfigError] = []
    s = Section(data, KEY, problems, file.parent)
    tls, context = s.optional_section("tls_server_config", _parse_tls) or (None, None)
    http = s.section("http_server_config", lambda h: read(h, HttpServerConfig, headers=lambda hs: hs.section(
        "headers", _parse_headers)))
    users = s.section("basic_auth_users", _parse_users)
    if users and importlib.util.find_spec("bcrypt") is None:
        s.error("basic_auth_users", "needs the bcrypt package (a dependency of edge-infer): pip install bcrypt")
    if s.raw("rate_limit") is not ABSENT:
        s.error("rate_limit", "not supported: metrics.max_connections bounds the load instead")
    s.finish()
    if problems:
        raise InvalidConfig(str(path), problems)
    return WebConfig(file, tls, context, http.headers, users)


class LiveWebConfig:
    """The file as it is now. ``current()`` re-reads it when it or a file it names changed; a reading that
    fails is logged once and ``current()`` is None until the files are fixed, so that a broken edit fails
    closed (refused connections) rather than serving with the old users or certificate. Turning TLS on or
    off is such a failure: the port's protocol is fixed at start."""

    def __init__(self, first: WebConfig) -> None:
        self._lock = threading.Lock()
        self._config: WebConfig | None = first
        self._tls = first.tls is not None
        self._files = first.files()
        self._stamp = self._stamps(self._files)

    @property
    def tls(self) -> bool:
        return self._tls

    @staticmethod
    def _stamps(files: tuple[Path, ...]) -> tuple[object, ...]:
        out: list[object] = []
        for f in files:
            try:
                st = os.stat(f)
                out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError as e:
                out.append(e.errno)
        return tuple(out)

    def current(self) -> WebConfig | None:
        with self._lock:  # one reading at a time; a stat of a few files per connection is all it costs else
            stamp = self._stamps(self._files)
            if stamp == self._stamp:
                return self._config
            self._stamp = stamp
            try:
                new = load_web_config(self._files[0])
                if (new.tls is not None) != self._tls:
                    raise ConfigError(KEY, "turning TLS on or off needs a restart")
            except (InvalidConfig, ConfigError) as e:
                log.error("%s is refused, and so is every request until it is fixed: %s", self._files[0], e)
                self._config = None
                return None
            log.info("re-read %s", self._files[0])
            self._config, self._files = new, new.files()
            self._stamp = self._stamps(self._files)
            return new
