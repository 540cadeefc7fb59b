"""Interactions: every touchpoint on every channel, stored once, linked to its contact, announced on the bus."""
