"""Personal data: the data map, the access log, consent, anonymisation after a year (docs/privacy.md)."""
