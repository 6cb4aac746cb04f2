"""The part of the settings that building mail needs, small enough to cross into the helper process."""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter.config import SenderSettings, Settings, secret_bytes


@dataclass(frozen=True)
class MailSettings:
    """What building a message needs of the settings, and nothing more.

    It travels to the helper process with every issue context, so it holds no credential the
    composing does not use: no SMTP login, no database URL. The secret key is here because the
    links and Message-IDs built from it are signed with it.
    """

    base_url: str
    domain: str
    list_id: str
    sender: SenderSettings
    secret_key: str = field(repr=False)
    bounce_domain: str = ""  # [inbox] bounce_domain: the digests' return path (VERP)
    read_tokens: bool = False  # [archive] visibility = "subscribers": web links carry one

    @classmethod
    def of(cls, settings: Settings) -> MailSettings:
        return cls(
            base_url=settings.base_url, domain=settings.domain, list_id=settings.list_id,
            sender=settings.sender, secret_key=settings.secret_key,
            bounce_domain=settings.inbox.bounce_domain,
            read_tokens=settings.archive.visibility == "subscribers",
        )  # fmt: skip

    @property
    def secret(self) -> bytes:
        return secret_bytes(self.secret_key)

    @property
    def list_id_header(self) -> str:
        return f"{self.list_id}.{self.domain}"
