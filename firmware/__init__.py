"""Pure-Python brain of the PBX: config model, dialplan, features, rating, DSP; no network I/O."""
