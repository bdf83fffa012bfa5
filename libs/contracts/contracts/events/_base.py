"""What every event's data shares."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Fen = Annotated[int, Field(description="Amount in fen (1/100 CNY)")]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
