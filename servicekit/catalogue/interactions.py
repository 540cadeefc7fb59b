from servicekit.catalogue import EventDoc

EVENTS: list[EventDoc] = []
