"""Where inputs come from: watched folders (with the inotify and lease helpers) and cameras."""
