"""The authenticator key as a QR code for the phone's camera, drawn here as an SVG image (the page's
CSP allows `data:` images only; no script, no outside service sees the key)."""

import base64

import qrcode
from qrcode.constants import ERROR_CORRECT_M


def modules(text: str) -> list[list[bool]]:
    """The QR code's dark and light modules, row by row, with the 4-module quiet zone readers need."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=4)
    code.add_data(text)
    code.make(fit=True)
    return [[bool(cell) for cell in row] for row in code.get_matrix()]


def svg(text: str) -> str:
    grid = modules(text)
    size = len(grid)
    path = "".join(f"M{x} {y}h1v1h-1z" for y, row in enumerate(grid) for x, dark in enumerate(row) if dark)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" shape-rendering="crispEdges">'
        f'<rect width="{size}" height="{size}" fill="#fff"/><path d="{path}" fill="#000"/></svg>'
    )


def data_uri(text: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg(text).encode()).decode()
