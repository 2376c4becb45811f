"""Where results go: durable JSON files, JSON Lines for cameras, and MQTT with its on-disk spool."""
