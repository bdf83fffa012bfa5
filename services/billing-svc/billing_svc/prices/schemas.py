from pydantic import BaseModel, Field


class PriceOut(BaseModel):
    """The price that applies to a rental started now; a rental keeps the price it started with."""

    currency: str = "CNY"
    period_minutes: int = Field(description="Every started period is charged")
    price_per_period_fen: int
    free_minutes: int = Field(description="A rental of at most this long is free")
    daily_cap_fen: int = Field(description="No 24 h window of a rental costs more than this")
    rule: str
