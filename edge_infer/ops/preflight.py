"""What must hold on this machine before a config can run: the extras its features need are installed, and
the files it names for secrets are readable. Checked by ``check-config`` and at start, refused by key."""
from __future__ import annotations

import importlib.util
import os

from ..config import AppConfig, CameraSourceConfig
from ..errors import ConfigError, InvalidConfig
from .folder_overlap import folder_overlaps
from .web_config import load_web_config


def check_supported(config: AppConfig) -> None:
    """Features that need an extra, or that this build does not run yet, are refused by key, not ignored."""
    overlaps = folder_overlaps(config)  # judged on the folders as they are here: symlinks resolved
    if overlaps:
        raise InvalidConfig(str(config.path or "config"), overlaps)
    for i, s in enumerate(config.sources):
        if isinstance(s, CameraSourceConfig) and importlib.util.find_spec("av") is None:
            raise ConfigError(f"sources[{i}].type", "camera sources need the 'camera' extra (PyAV): "
                                                    "pip install 'edge-infer[camera]'")
    mqtt = config.output.mqtt
    if mqtt is not None:
        if importlib.util.find_spec("paho") is None or importlib.util.find_spec("paho.mqtt") is None:
            raise ConfigError("output.mqtt", "the MQTT sink needs the 'mqtt' extra (paho-mqtt): "
                                             "pip install 'edge-infer[mqtt]'")
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            path = getattr(mqtt, key)
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError(f"output.mqtt.{key}", f"cannot read {path}")
    if config.metrics.web_config is not None:
        load_web_config(config.metrics.web_config)  # InvalidConfig naming metrics.web_config and the inner key
