"""Call parking: "park this call, pick it up on 701".

A parking lot has a park number (700) and slots after it (701-720). Transferring a call to 700
parks it in the first free slot and says the slot to whoever parked it; the parked caller hears
music; dialling the slot from any phone takes the call. A call nobody takes within `timeout`
seconds rings the phone that parked it again, then goes to `return_destination` (the operator;
"" = it is hung up when the parker does not answer either). Phones with a BLF key on a slot see
it lit while a call is parked there.

Without a lot configured the default one (700, 701-720, 45 s) is there, as on most PBXs.
Pure: slot choice and the order of the timeout's destinations are functions of their inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from firmware.config.destination import EXTENSION_NUMBER_RE, destination_errors
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, destination_refs, register_records
from firmware.dialplan.context import Context
from firmware.dialplan.plan import NOTHING_NEXT, Next, Plan
from firmware.dialplan.router import NUMBER_HANDLERS

TABLE = "parking_lots"
TIMEOUT = (10, 3600)
MAX_SLOTS = 100


@dataclass(frozen=True)
class ParkingLot:
    number: str = "700"                 # transfer a call here to park it
    name: str = "Parking"
    first_slot: str = "701"
    slots: int = 20
    timeout: int = 45                   # seconds parked before it rings the parker again
    return_destination: str = ""        # after the parker: the operator ("" = hang up)

    def slot_numbers(self) -> list[str]:
        width = len(self.first_slot)
        return [str(int(self.first_slot) + i).zfill(width) for i in range(self.slots)]

    def validate(self) -> None:
        errors = []
        for name in ("number", "first_slot"):
            value = getattr(self, name)
            if not isinstance(value, str) or not EXTENSION_NUMBER_RE.fullmatch(value):
                errors.append(ValidationError(name, f"{value!r} is not a number of 2-6 digits starting with 1-9, "
                                                    "e.g. 700 / 701"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40:
            errors.append(ValidationError("name", "must be 1-40 characters, e.g. 'Parking'"))
        if not isinstance(self.slots, int) or isinstance(self.slots, bool) or not 1 <= self.slots <= MAX_SLOTS:
            errors.append(ValidationError("slots", f"{self.slots!r}: a lot has 1-{MAX_SLOTS} slots"))
        if not isinstance(self.timeout, int) or isinstance(self.timeout, bool) or \
                not TIMEOUT[0] <= self.timeout <= TIMEOUT[1]:
            errors.append(ValidationError("timeout", f"{self.timeout!r}: a call stays parked {TIMEOUT[0]}-"
                                                     f"{TIMEOUT[1]} seconds before it rings back"))
        if not errors:
            last = self.slot_numbers()[-1]
            if not EXTENSION_NUMBER_RE.fullmatch(last):
                errors.append(ValidationError("slots", f"the last slot would be {last}: use fewer slots"))
            if self.number in self.slot_numbers():
                errors.append(ValidationError("first_slot", f"the slots {self.first_slot}-{last} include the park "
                                                            f"number {self.number}: start them after it"))
        errors += destination_errors("return_destination", self.return_destination, optional=True)
        if errors:
            raise ValidationErrors(errors)


DEFAULT_LOT = ParkingLot()
PARKING_LOTS = register_records(RecordKind(
    Collection(TABLE, ParkingLot, key="number", noun="parking lot", sort_key=int),
    references=lambda lot: destination_refs(("return_destination", lot.return_destination))))


def lots(config) -> list[ParkingLot]:
    """The configured lots, or the default one."""
    configured = list(config.table(TABLE).values())
    return configured or [DEFAULT_LOT]


def lot_of(number: str, config) -> ParkingLot | None:
    """The lot whose park number or one of whose slots `number` is."""
    for lot in lots(config):
        if number == lot.number or number in lot.slot_numbers():
            return lot
    return None


def first_free_slot(lot: ParkingLot, occupied) -> str | None:
    """The lowest slot nobody is parked in, None when the lot is full."""
    return next((s for s in lot.slot_numbers() if s not in occupied), None)


def after_timeout(lot: ParkingLot, parker: str) -> list[str]:
    """Where an unclaimed parked call goes, in order: the parker's extension, then the lot's
    return destination (each tried once; a return destination naming the parker is not rung twice)."""
    order = [f"extension:{parker}"] if parker else []
    if lot.return_destination and lot.return_destination not in order:
        order.append(lot.return_destination)
    return order


# --- plan steps -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Retrieve:
    """Take the call parked in `slot` of `lot` (dialled from an extension)."""
    lot: ParkingLot
    slot: str
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"retrieve the call parked in {self.slot}"


@dataclass(frozen=True)
class ParkHint:
    """The park number dialled as a call of its own: it rings, saying "hang up to park the call in
    701". That is how an analog phone parks: flash (the call is held), dial 700, hang up; its line
    gateway then transfers the held call to 700 (a blind REFER), which parks it."""
    lot: ParkingLot
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"park number {self.lot.number}: hang up to park the held call"


def _dialled(dialled: str, ctx: Context) -> Plan | None:
    lot = lot_of(dialled, ctx.config)
    if lot is None:
        return None
    if dialled == lot.number:
        return ParkHint(lot)
    return Retrieve(lot, dialled)


NUMBER_HANDLERS.append(_dialled)
