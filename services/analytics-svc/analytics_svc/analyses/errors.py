from kit.errors import BusinessError


class InvalidPeriod(BusinessError):
    status = 400
    code = "invalid_period"
    title = "The period is not valid"
