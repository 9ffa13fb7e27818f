"""The admin pages: the blueprints the app registers and the menu that links them.

A feature's pages are one blueprint in webui/<feature>/ (views.py with `bp`, templates/).
To add one, append it to FEATURE_PAGES: the app registers the blueprint and the second menu
row ("Call features") links its page.
"""
from __future__ import annotations

# (blueprint package under webui/, endpoint, label): the first menu row
MAIN_PAGES = [
    ("dashboard", "dashboard.index", "Dashboard"),
    ("extensions", "extensions.index", "Extensions"),
    ("trunks", "trunks.index", "Trunks"),
    ("routing", "routing.index", "Routes"),
    ("lines", "lines.index", "Lines"),
    ("cdr", "cdr.index", "Calls"),
    ("recordings", "recordings.index", "Recordings"),
    ("settings", "settings.index", "Settings"),
    ("system", "system.index", "System"),
    ("ha", "ha.index", "Failover"),
    ("provisioning", "provisioning.index", "Phones"),
    ("https", "https.index", "HTTPS"),
    ("api", "api.docs", "API"),
]

# the same, for the call features (voicemail, IVR, ring groups, ...): the second menu row
FEATURE_PAGES: list[tuple[str, str, str]] = [
    ("ringgroups", "ringgroups.index", "Ring groups"),
    ("parking", "parking.index", "Parking"),
    ("followme", "followme.index", "Follow Me"),
    ("daynight", "daynight.index", "Day/night"),
    ("timeconditions", "timeconditions.index", "Time conditions"),
    ("blocking", "blocking.index", "Call blocking"),
    ("codes", "codes.index", "Feature codes"),
    ("phonebook", "phonebook.index", "Phonebook"),
    ("moh", "moh.index", "Music on hold"),
    ("conference", "conference.index", "Conference"),
    ("pagegroups", "pagegroups.index", "Paging"),
    ("mail", "mail.index", "Mail"),
    ("voicemail", "voicemail.index", "Voicemail"),
    ("ivr", "ivr.index", "IVR menus"),
    ("prompts", "prompts.index", "System prompts"),
    ("charging", "charging.index", "Call charging"),
    ("reports", "reports.index", "Reports"),
    ("queues", "queues.index", "Queues"),
    ("phone", "phone.index", "Browser phone"),
]

# blueprints without a menu entry
OTHER_BLUEPRINTS = ["auth", "wizard", "me"]


def blueprint_packages() -> list[str]:
    return OTHER_BLUEPRINTS[:2] + [p for p, _, _ in MAIN_PAGES + FEATURE_PAGES] + OTHER_BLUEPRINTS[2:]
