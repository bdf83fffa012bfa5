from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "notify-svc"
    # How often the SLA sweeper looks for overdue tickets when no deadline it knows is due (0: never).
    ticket_sla_sweep_interval_s: float = 60.0
