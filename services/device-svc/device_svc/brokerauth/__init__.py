"""The broker's device accounts, kept by a sidecar beside each broker (issue 17).

device-svc replicas only write the registry (device_credentials). A statement trigger counts each committed
change (`broker_auth_version`) and notifies channel ``device_credentials``; the sidecar of every broker
(``python -m device_svc.brokerauth``, :mod:`.sync`) rewrites its broker's password file from the registry,
reloads the broker (SIGHUP) and records the version it applied (`broker_auth_syncs`). A replica that changed a
credential waits for every live broker to reach its version (:mod:`.service`) before it answers, so a new
password works and a revoked one is refused the moment the answer arrives, whichever replica gave it."""
