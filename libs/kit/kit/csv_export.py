"""CSV export of report rows (analytics analyses, finance reports): one column per field, UTF-8 with a header line."""

import csv
import io
from collections.abc import Sequence

from fastapi import Response
from pydantic import BaseModel


def csv_response(rows: Sequence[BaseModel], columns: Sequence[str], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = row.model_dump(mode="json")
        writer.writerow([values[c] for c in columns])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )
