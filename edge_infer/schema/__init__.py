"""The config's schema, one module per section; ``edge_infer.config`` makes ``AppConfig`` of them.

Each key is declared once, with ``setting(default, doc, rule)`` (``config_reader.py``), in the
module of its section: ``processing_config`` (model, batch, pipeline), ``source_config`` with
``folder_config`` and ``camera_config`` (the sources, camera regions), ``output_config`` (results,
MQTT) and ``service_config`` (metrics, shutdown, logging).
"""
