"""`make bench`: SIPp load against a running PBX (CPU per bridged call, setups/s, post-dial delay, memory)."""
