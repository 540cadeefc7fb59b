"""The channels customers reach us on; shared vocabulary of every service."""

from enum import StrEnum


class Channel(StrEnum):
    phone = "phone"
    in_person = "in_person"
    email = "email"
    sms = "sms"
    live_chat = "live_chat"
    social = "social"
    self_service = "self_service"


CHANNELS = [channel.value for channel in Channel]
