from pydantic import BaseModel


class TermsOut(BaseModel):
    version: str
    text: str
