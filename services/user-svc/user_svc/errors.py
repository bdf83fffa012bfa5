from kit.errors import BusinessError, Conflict, NotFound, Unauthorized


class TermsNotAccepted(BusinessError):
    status = 422
    code = "terms_not_accepted"
    title = "The terms of service must be accepted"


class TermsOutdated(Conflict):
    code = "terms_outdated"
    title = "The accepted terms of service are not the current version"


class PhoneTaken(Conflict):
    code = "phone_taken"
    title = "This phone number is already registered"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    title = "Invalid login or password"


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "No such user"
