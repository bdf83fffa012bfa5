"""Other makers' device protocols, as wire formats: what their cabinets send and accept. device-svc's
protocol adapters (device_svc/protocols/) translate them into the platform's own messages
(contracts.mqtt); the emulator speaks them. How to add one: docs/vendors.md."""
