"""Which inbound route a call from a trunk is for, by the DID the provider sent.

Providers write the same number differently (+442071234567, 442071234567, 02071234567,
00442071234567). A route always matches its DID exactly and with or without a leading '+'; with
`match_national` it also matches every written form of the number in the office's country
(Settings.country). An exact match wins over a looser one, so two routes never fight.
"""
from __future__ import annotations

from firmware.config.routing import InboundRoute

# country -> (country code, national trunk prefix, international prefix, national number length
# without the trunk prefix or 0 when it varies)
NUMBERING = {
    "uk": ("44", "0", "00", 0),
    "us": ("1", "1", "011", 10),
}


def e164_digits(number: str, country: str) -> str:
    """The number as country code + national number, without '+': the form two spellings share."""
    cc, trunk_prefix, intl_prefix, national_len = NUMBERING.get(country, ("", "", "00", 0))
    if number.startswith("+"):
        return number[1:]
    if number.startswith(intl_prefix):
        return number[len(intl_prefix):]
    if national_len and len(number) == national_len:
        return cc + number
    if cc and not number.startswith(cc) and trunk_prefix and number.startswith(trunk_prefix):
        return cc + number[len(trunk_prefix):]
    return number


def match_inbound_route(did: str, routes: tuple[InboundRoute, ...], country: str) -> InboundRoute | None:
    for route in routes:
        if route.did == did:
            return route
    bare = did.removeprefix("+")
    for route in routes:
        if route.did.removeprefix("+") == bare:
            return route
    wanted = e164_digits(did, country)
    for route in routes:
        if route.match_national and e164_digits(route.did, country) == wanted:
            return route
    return None
