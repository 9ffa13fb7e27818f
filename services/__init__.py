"""Services: the processes that wire firmware/ to the world (SIP, RTP, Kamailio, control, CLI)."""
