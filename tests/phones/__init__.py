"""Real SIP test phones (pjsua2, SIPp, baresip) that end-to-end tests drive against the PBX."""
