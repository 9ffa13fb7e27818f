"""Call service: SIP B2BUA behind the Kamailio edge, with the media anchored here."""
