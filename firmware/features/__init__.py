"""The office features, one module each: model + validation + pure decisions (no I/O).

Each module registers what it adds when it is imported: its config records
(firmware/config/records.py), destination kinds (firmware/config/destination.py), dialplan
handlers (firmware/dialplan/router.py DESTINATION_HANDLERS), plan steps and feature codes
(firmware/dialplan/feature_codes.py). This package imports them all; firmware.config and
firmware.dialplan import this package, so whoever reads the config sees every feature.
"""
from . import moh  # noqa: F401
from . import daynight  # noqa: F401
from . import timeconditions  # noqa: F401
from . import ringgroups  # noqa: F401
from . import voicemail  # noqa: F401
from . import parking  # noqa: F401
from . import ivr  # noqa: F401
from . import directory  # noqa: F401
from . import blocking  # noqa: F401
from . import charging  # noqa: F401
from . import queues  # noqa: F401
from . import conference  # noqa: F401
from . import followme  # noqa: F401
from . import codes  # noqa: F401
from . import provisioning  # noqa: F401
from . import phonebook  # noqa: F401
from . import paging  # noqa: F401
from . import echotest  # noqa: F401
