class EsupdaterError(Exception):
    """Base of esupdater's errors a user can act on."""
