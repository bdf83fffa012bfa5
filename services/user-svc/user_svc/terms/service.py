from dataclasses import dataclass
from pathlib import Path

from user_svc.errors import TermsNotAccepted, TermsOutdated

DEFAULT_TERMS_TEXT = """\
Power bank rental terms of service (placeholder text; operators set TERMS_TEXT_FILE).

1. A rental starts when a power bank is ejected to you and ends when a cabinet reports it returned.
2. Fees follow the price shown before you borrow and are charged to your balance or payment method.
3. We keep the data needed to run rentals and billing and to meet regulatory duties, and no more.
"""


@dataclass(frozen=True)
class Terms:
    version: str
    text: str

    def check_acceptance(self, *, accepted: bool, version: str) -> None:
        if not accepted:
            raise TermsNotAccepted("Read and accept the terms of service (terms_accepted: true) to register")
        if version != self.version:
            raise TermsOutdated(
                f"Terms version {version!r} is not the current one; fetch GET /v1/terms and accept it",
                current_version=self.version,
            )


def load_terms(version: str, text_file: Path | None) -> Terms:
    text = text_file.read_text(encoding="utf-8") if text_file is not None else DEFAULT_TERMS_TEXT
    return Terms(version=version, text=text)
