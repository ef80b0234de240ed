class EsupdaterError(Exception):
    """Base of esupdater's errors a user can act on."""


class BulkItemError(EsupdaterError):
    """Elasticsearch refused one action for good (mapping or parse error, missing document)."""

    def __init__(self, op_type: str, index: str, doc_id: str, status: int, reason: str) -> None:
        super().__init__(
            f"{op_type} {index}/{doc_id} refused by Elasticsearch ({status}): {reason}"
        )
        self.op_type = op_type
        self.index = index
        self.doc_id = doc_id
        self.status = status
        self.reason = reason


class ConfigError(EsupdaterError):
    """Configuration esupdater cannot work with; the message says what and where."""
