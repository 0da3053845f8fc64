"""Typed errors. Everything saeembed raises on purpose derives from SaeembedError, so the CLI can
print one clear line for it and exit non-zero, and let anything else surface as a real bug."""


class SaeembedError(Exception):
    """Base class: a problem the user can fix (bad input, wrong pairing, missing thing)."""


class InputError(SaeembedError):
    """A file, column, or value given by the user cannot be used."""


class StoreError(SaeembedError):
    """The store cannot be opened or does not hold what was asked for."""


class SchemaVersionError(StoreError):
    """The store was written by another schema version and cannot be migrated."""


class MigrationNeeded(SchemaVersionError):
    """An older store opened read-only: it can be migrated, by opening it once for writing."""


class UnknownCorpusError(StoreError):
    """A corpus name that the store does not hold."""


class UnknownFeatureError(SaeembedError):
    """A feature id outside the SAE's latents."""


class SAEError(SaeembedError):
    """SAE weights that cannot be loaded, or an SAE that does not fit the model."""


class ModelError(SaeembedError):
    """A model that cannot be loaded, or a hook point it does not have."""


class FilterError(InputError):
    """A filter expression that does not parse or names an unknown column."""
