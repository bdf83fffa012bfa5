"""Emulated power bank cabinets speaking the MQTT device protocol v1 (see contracts.mqtt)."""

from device_emulator.bank import BankFaults, BankModule
from device_emulator.cabinet import Cabinet, CabinetError, Faults, SlotUnavailable
from device_emulator.fleet import BankLocation, Fleet, FleetSpec
from device_emulator.volinks import VolinksCabinet

__all__ = [
    "BankFaults",
    "BankLocation",
    "BankModule",
    "Cabinet",
    "CabinetError",
    "Faults",
    "Fleet",
    "FleetSpec",
    "SlotUnavailable",
    "VolinksCabinet",
]
