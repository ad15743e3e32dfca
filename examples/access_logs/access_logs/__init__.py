"""Steps for web server access logs: archive each log compressed, summarise its traffic, and
total the traffic of every log of a run."""
