"""Errors raised by the configuration store: bad values and unusable files."""


class ValidationError(ValueError):
    """One bad value: which field, and what is wrong with it (phrased so the fix is obvious)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    @property
    def errors(self) -> list["ValidationError"]:
        # Callers can always iterate `exc.errors`, whether one field or several were wrong.
        return [self]


class ValidationErrors(ValidationError):
    """Every bad field found while checking a whole object, so a form can mark them all at once.

    A subclass of ValidationError: `except ValidationError` catches both; `.field` and
    `.message` describe the first problem, `.errors` lists them all.
    """

    def __init__(self, errors: list[ValidationError]):
        if not errors:
            raise ValueError("ValidationErrors needs at least one ValidationError")
        self._errors = list(errors)
        ValueError.__init__(self, "; ".join(str(e) for e in self._errors))
        self.field = self._errors[0].field
        self.message = self._errors[0].message

    @property
    def errors(self) -> list[ValidationError]:
        return list(self._errors)

    def __iter__(self):
        return iter(self._errors)

    def __len__(self) -> int:
        return len(self._errors)


class ConfigFileError(RuntimeError):
    """config.json cannot be used as it is (unreadable, not our format, or too new)."""


class SchemaVersionError(ConfigFileError):
    """The file was written by newer firmware; opening it here could silently drop settings."""


class ConfigLockTimeout(RuntimeError):
    """Another process held config.lock far longer than any write takes."""
