"""Contacts: the customers, their identities per channel, consent, merge and GDPR erase."""
