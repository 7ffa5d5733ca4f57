"""Email addresses: parsing and normalising, masking, the policy's domain lists and
MX check, and the rendered message."""

from __future__ import annotations

import html
import html.parser
from pathlib import Path

import pytest

from otpguard.email_address import EmailAddress, mask, parse
from otpguard.email_policy import MX_CACHE_SIZE, DnsMxResolver, EmailPolicy, dev_allowed
from otpguard.errors import ConfigError, InvalidEmailAddress
from otpguard.models import Channel
from otpguard.transports.base import Message
from otpguard.transports.email_message import EMAIL_TEMPLATES, PAYMENT_LINES, mime_message, render

from .conftest import make_settings
from .fake_dns import FakeDns


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("jo@example.com", "jo@example.com"),
        ("  Jo.Smith@Example.COM ", "jo.smith@example.com"),
        ("jo+tag@mail.example.co.uk", "jo+tag@mail.example.co.uk"),
        ("j@bücher.example", "j@xn--bcher-kva.example"),
        ("j@BÜCHER.example", "j@xn--bcher-kva.example"),
        ("j@example.com.", "j@example.com"),
        ("o'neil@example.com", "o'neil@example.com"),
    ],
)
def test_normalised(raw: str, normal: str) -> None:
    assert parse(raw).address == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "jo",
        "jo@",
        "@example.com",
        "Jo Smith <jo@example.com>",
        "<jo@example.com>",
        '"jo smith"@example.com',
        '"jo"@example.com',
        "jo(comment)@example.com",
        "jo@[192.0.2.1]",
        "jo@192.0.2.1",
        "jo@localhost",
        "jo@example",
        "jo@@example.com",
        "a@b@example.com",
        "jo@example.com, al@example.com",
        "jo@exam\nple.com",
        "jo\u0000@example.com",
        ".jo@example.com",
        "jo.@example.com",
        "j..o@example.com",
        "jö@example.com",
        "jo@-example.com",
        "jo@example-.com",
        "jo@exa_mple.com",
        "x" * 65 + "@example.com",
        "jo@" + "a" * 64 + ".com",
        "jo@" + ".".join(["a" * 60] * 5) + ".com",
        "+447400123456",
        "jo%evil.example@relay.example",
        "evil.example!jo@relay.example",
        "jo{x}@example.com",
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(InvalidEmailAddress) as err:
        parse(raw)
    assert err.value.code == "invalid_email_address" and "'to'" in err.value.message


def test_not_a_string() -> None:
    with pytest.raises(InvalidEmailAddress):
        parse(12)


def test_mailbox_drops_the_tag_and_keeps_the_domain() -> None:
    a = parse("Jo+one@Example.com")
    assert (a.local, a.domain, a.mailbox) == ("jo+one", "example.com", "jo@example.com")
    assert parse("+x@example.com").mailbox == "+x@example.com"  # nothing before the tag
    assert (a.region, a.type, a.is_twilio_magic, a.prefix) == (None, "email", False, "@example.com")


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("john@mail.example.com", "j***@m***.com"),
        ("j@e.io", "j***@e***.io"),
        ("jo@xn--bcher-kva.example", "j***@x***.example"),
    ],
)
def test_mask_shows_no_more_than_initials_and_the_tld(address: str, masked: str) -> None:
    assert mask(address) == masked


def policy(tmp_path: Path, **overrides: object) -> EmailPolicy:
    return EmailPolicy.from_section(make_settings(tmp_path, **overrides).email)


def test_disposable_domains_and_their_subdomains(tmp_path: Path) -> None:
    p = policy(tmp_path, email_disposable_domains=["@Burner.Example"])
    for raw in ("x@mailinator.com", "x@eu.mailinator.com", "x@burner.example"):
        assert p.decide(parse(raw)).reason == "disposable_domain"
    assert p.decide(parse("x@notmailinator.com")).allowed
    off = policy(tmp_path, email_refuse_disposable=False)
    assert off.decide(parse("x@mailinator.com")).allowed


def test_allowed_domains(tmp_path: Path) -> None:
    p = policy(tmp_path, email_allowed_domains=["corp.example", "bücher.example"])
    assert p.decide(parse("x@corp.example")).allowed
    assert p.decide(parse("x@eu.corp.example")).allowed
    assert p.decide(parse("x@xn--bcher-kva.example")).allowed
    assert p.decide(parse("x@corp.example.evil.com")).reason == "domain_not_allowed"
    assert p.decide(parse("x@gmail.com")).reason == "domain_not_allowed"


@pytest.mark.parametrize(
    "setting", ["email_allowed_domains", "email_disposable_domains", "dev_allowed_emails"]
)
def test_malformed_lists_are_named(tmp_path: Path, setting: str) -> None:
    settings = make_settings(tmp_path, **{setting: ["ok.example", "not a domain"]})
    with pytest.raises(ConfigError) as err:
        EmailPolicy.from_section(settings.email)
        dev_allowed(settings.email)
    assert f"OTPGUARD_{setting.upper()}" in err.value.message


def test_dev_allowed_addresses_and_domains(tmp_path: Path) -> None:
    s = make_settings(tmp_path, dev_allowed_emails=["Me@Work.Example", "@team.example"])
    assert dev_allowed(s.email) == (frozenset({"me@work.example"}), frozenset({"team.example"}))


class FakeResolver:
    """Answers like a resolver would: MX hosts, [] (none / no such domain), None (failed)."""

    def __init__(self, answers: dict[str, list[str] | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def mail_exchangers(self, domain: str) -> list[str] | None:
        self.asked.append(domain)
        return self.answers.get(domain, [])


async def test_mx_check(tmp_path: Path) -> None:
    resolver = FakeResolver(
        {"mail.example": ["mx1.mail.example"], "null.example": ["."], "flaky.example": None}
    )
    settings = make_settings(tmp_path, email_require_mx=True)
    p = EmailPolicy.from_section(settings.email, resolver)
    assert (await p.decide_mx(parse("a@mail.example"), 0.0)).allowed
    assert (await p.decide_mx(parse("a@null.example"), 0.0)).reason == "no_mx"
    assert (await p.decide_mx(parse("a@nothing.example"), 0.0)).reason == "no_mx"
    assert (await p.decide_mx(parse("a@flaky.example"), 0.0)).allowed  # a failed lookup admits
    # Cached: a second address of a known domain asks nothing; a failure is not cached.
    await p.decide_mx(parse("b@mail.example"), 1.0)
    await p.decide_mx(parse("b@flaky.example"), 1.0)
    assert resolver.asked.count("mail.example") == 1
    assert resolver.asked.count("flaky.example") == 2
    off = EmailPolicy.from_section(make_settings(tmp_path).email, resolver)
    assert (await off.decide_mx(parse("a@nothing.example"), 0.0)).allowed


async def test_mx_cache_is_bounded(tmp_path: Path) -> None:
    resolver = FakeResolver({})
    p = EmailPolicy.from_section(make_settings(tmp_path, email_require_mx=True).email, resolver)
    for i in range(MX_CACHE_SIZE + 50):
        await p.decide_mx(EmailAddress(f"a@d{i}.example"), 0.0)
    assert len(p._mx) == MX_CACHE_SIZE


def message(locale: str = "en", service: str = "Acme <b>&") -> Message:
    return Message("VE1", "jo@example.com", Channel.EMAIL, "482913", service, 290, locale)


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize("locale", sorted(EMAIL_TEMPLATES))
def test_rendered_in_each_locale(locale: str) -> None:
    content = render(message(locale, "Acme"))
    share = EMAIL_TEMPLATES[locale][3].format(service="Acme")
    assert "482913" not in content.subject and "Acme" in content.subject
    assert share in content.text and html.escape(share) in content.html
    for part in (content.text, content.html):
        assert "482913" in part and "Acme" in part and "5 min" in part.lower()
    assert f'lang="{locale}"' in content.html
    assert "482913" not in repr(content)


def test_html_has_nothing_remote_and_escapes_the_service_name() -> None:
    content = render(message())
    parser = _Tags()
    parser.feed(content.html)
    tags = {t for t, _ in parser.tags}
    assert not tags & {"img", "a", "link", "script", "iframe", "object", "style", "form"}
    assert all("src" not in a and "href" not in a for _, a in parser.tags)
    assert "url(" not in content.html and "http" not in content.html
    assert "Acme &lt;b&gt;&amp;" in content.html and "<b>" not in content.html


def test_mime_message_is_alternative_text_then_html() -> None:
    mail = mime_message(message(service="Acme"), "codes@example.com")
    assert mail.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in mail.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert mail["From"] == "Acme <codes@example.com>" and mail["To"] == "jo@example.com"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "482913" not in mail["Subject"]


async def test_dns_resolver_against_a_local_server() -> None:
    zones = {"mail.example": ["mx1.mail.example", "mx2.mail.example"], "null.example": ["."]}
    with FakeDns(zones, empty=frozenset({"nomx.example"})) as server:
        resolver = DnsMxResolver([f"127.0.0.1:{server.port}"], timeout=0.5)
        assert sorted(await resolver.mail_exchangers("mail.example") or []) == [
            "mx1.mail.example", "mx2.mail.example",
        ]  # fmt: skip
        assert await resolver.mail_exchangers("null.example") == ["."]
        assert await resolver.mail_exchangers("nomx.example") == []
        assert await resolver.mail_exchangers("nowhere.example") == []
        server.mode = "servfail"
        assert await resolver.mail_exchangers("mail.example") is None
    assert "nowhere.example" in server.queries


async def test_mx_check_through_settings_and_a_local_server(
    tmp_path: Path,
) -> None:
    with FakeDns({"mail.example": ["mx.mail.example"], "null.example": ["."]}) as server:
        settings = make_settings(
            tmp_path, email_require_mx=True, email_mx_nameservers=[f"127.0.0.1:{server.port}"]
        )
        p = EmailPolicy.from_section(settings.email)
        assert (await p.decide_mx(parse("a@mail.example"), 0.0)).allowed
        assert (await p.decide_mx(parse("a@null.example"), 0.0)).reason == "no_mx"
        assert (await p.decide_mx(parse("a@gone.example"), 0.0)).reason == "no_mx"


@pytest.mark.parametrize("entry", ["dns.example", "127.0.0.1:0", "127.0.0.1:99999", "x:53"])
def test_nameservers_are_ip_addresses(tmp_path: Path, entry: str) -> None:
    settings = make_settings(tmp_path, email_require_mx=True, email_mx_nameservers=[entry])
    with pytest.raises(ConfigError, match="OTPGUARD_EMAIL_MX_NAMESERVERS"):
        EmailPolicy.from_section(settings.email)


@pytest.mark.parametrize("locale", sorted(EMAIL_TEMPLATES))
def test_a_transaction_email_names_the_payment(locale: str) -> None:
    """PSD2's dynamic linking by email: both bodies name the amount and the payee
    (escaped in the HTML); a login code's mail has no payment line."""
    paying = Message(
        "VE1", "jo@example.com", Channel.EMAIL, "482913", "Acme", 290, locale,
        amount="GBP 25.00", payee="Smith & Sons",
    )  # fmt: skip
    content = render(paying)
    line = PAYMENT_LINES[locale].format(amount="GBP 25.00", payee="Smith & Sons")
    assert line in content.text and html.escape(line) in content.html
    assert "25.00" not in content.subject
    assert "GBP" not in render(message(locale, "Acme")).text
