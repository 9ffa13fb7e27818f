"""High availability on the box: this box's HA settings (DATA/ha.json), keepalived as a supervised
child of `pbx run`, and the health check and state notifications keepalived calls back
(`pbx ha check`, `pbx ha notify`). The decisions are in firmware/ha.py."""
