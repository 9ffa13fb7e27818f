"""Numbers as E.164 and what kind of destination they are, with Google's libphonenumber (Python port).

`normalise("07700900123", "GB")` -> "+447700900123"; "0033145678901", "+33145678901" and
"33145678901" on a French box all give "+33145678901". A number the library cannot parse at all
(letters, a star code) gives "" and is not rated.
"""
from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# destination types a sheet row may name (the `type` column)
DEST_TYPES = ("landline", "mobile", "freephone", "premium", "international", "directory", "special",
              "emergency", "inbound", "internal")

_TYPES = {
    PhoneNumberType.FIXED_LINE: "landline",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "landline",
    PhoneNumberType.TOLL_FREE: "freephone",
    PhoneNumberType.PREMIUM_RATE: "premium",
    PhoneNumberType.SHARED_COST: "special",
    PhoneNumberType.VOIP: "landline",
    PhoneNumberType.PERSONAL_NUMBER: "special",
    PhoneNumberType.PAGER: "special",
    PhoneNumberType.UAN: "landline",
    PhoneNumberType.VOICEMAIL: "special",
}


def _parse(number: str, country: str):
    number = (number or "").strip()
    if not number or not any(ch.isdigit() for ch in number) or any(ch.isalpha() or ch in "*#" for ch in number):
        return None
    try:
        return phonenumbers.parse(number, country.upper() or None)
    except NumberParseException:
        if number.isdigit():
            try:                 # "447700900123": an E.164 number without its plus
                return phonenumbers.parse("+" + number, None)
            except NumberParseException:
                return None
        return None


def normalise(number: str, country: str = "GB") -> str:
    """The number in E.164 ("+447700900123"), or "" when it is no phone number at all."""
    parsed = _parse(number, country)
    if parsed is None:
        return ""
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def classify(number: str, country: str = "GB") -> str:
    """landline / mobile / freephone / premium / special / international, or "" when unknown.

    A number in another country than the box's is "international" whatever it is there.
    """
    parsed = _parse(number, country)
    if parsed is None:
        return ""
    home = phonenumbers.country_code_for_region(country.upper())
    if home and parsed.country_code != home:
        return "international"
    return _TYPES.get(phonenumbers.number_type(parsed), "")
