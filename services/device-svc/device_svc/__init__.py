"""device-svc: the device registry, the MQTT gateway to cabinets, eject commands and returns."""
