"""Attribute distributions, one row per (division, attribute, bucket): charts and CSV alike."""

from pydantic import AwareDatetime, BaseModel


class AttributeRow(BaseModel):
    division_code: str
    name: str
    attribute: str
    bucket: str
    count: int


class AttributesOut(BaseModel):
    at: AwareDatetime
    rows: list[AttributeRow]
