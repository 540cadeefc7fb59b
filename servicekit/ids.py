import uuid

import uuid6


def new_id() -> uuid.UUID:
    """A time-ordered UUID (version 7): sorts by creation time, keeps indexes compact."""
    return uuid.UUID(str(uuid6.uuid7()))
