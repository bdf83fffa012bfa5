"""Protocol adapters: a maker's device protocol translated at the edge into the platform's own messages
(contracts.mqtt) and back, so nothing behind device-svc's MQTT intake knows which maker a cabinet is
from. The registry records each cabinet's protocol (`cabinets.protocol`). How to add one:
docs/vendors.md; the behaviours every adapter must pass: protocols/testkit.py."""
