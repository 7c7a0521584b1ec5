"""The data-sharing service: agencies call the platform over HTTP, each call a logged sharing transaction."""
