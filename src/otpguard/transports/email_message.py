"""The code as an email: a subject, a plain-text part and an HTML part, per locale.

Each names the service, says how long the code is valid and not to share it.
The code is in the bodies only, never in the subject (relays log subjects). The
HTML has no images, no links and no remote resources of any kind (inline styles
only), so opening the mail tells nobody anything and a mail client has nothing
to fetch. The service name is escaped: it is the operator's, or a /v2
service's friendly name.

Both transports use :func:`render`: SMTP as a MIME ``multipart/alternative``
(:func:`mime_message`), SendGrid as its ``content`` list.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from .base import Message

# subject, lead line, validity, do-not-share, "not you" line. {service}, {minutes}.
EMAIL_TEMPLATES: dict[str, tuple[str, str, str, str, str]] = {
    "en": (
        "Your {service} verification code",
        "Your {service} verification code is:",
        "It is valid for {minutes} min.",
        "Do not share this code with anyone. {service} will never ask you for it.",
        "If you did not ask for this code, you can ignore this email.",
    ),
    "es": (
        "Tu código de verificación de {service}",
        "Tu código de verificación de {service} es:",
        "Es válido durante {minutes} min.",
        "No compartas este código con nadie. {service} nunca te lo pedirá.",
        "Si no has pedido este código, puedes ignorar este correo.",
    ),
    "fr": (
        "Votre code de vérification {service}",
        "Votre code de vérification {service} est :",
        "Il est valable {minutes} min.",
        "Ne partagez ce code avec personne. {service} ne vous le demandera jamais.",
        "Si vous n'avez pas demandé ce code, ignorez ce message.",
    ),
    "de": (
        "Ihr {service}-Bestätigungscode",
        "Ihr {service}-Bestätigungscode lautet:",
        "Er ist {minutes} Min. gültig.",
        "Teilen Sie diesen Code mit niemandem. {service} wird Sie nie danach fragen.",
        "Wenn Sie diesen Code nicht angefordert haben, ignorieren Sie diese E-Mail.",
    ),
}

# A transaction code's line naming what it approves (PSD2's dynamic linking).
PAYMENT_LINES: dict[str, str] = {
    "en": "This code approves a payment of {amount} to {payee}.",
    "es": "Este código aprueba un pago de {amount} a {payee}.",
    "fr": "Ce code approuve un paiement de {amount} à {payee}.",
    "de": "Dieser Code bestätigt eine Zahlung von {amount} an {payee}.",
}

_HTML = """<!DOCTYPE html>
<html lang="{lang}">
<head><meta charset="utf-8"><title>{subject}</title></head>
<body style="margin:0;padding:24px;font-family:Helvetica,Arial,sans-serif;color:#1a1a1a;">
<p style="font-size:16px;">{lead}</p>
<p style="font-size:32px;font-weight:bold;letter-spacing:6px;font-family:monospace;">{code}</p>
{payment}<p style="font-size:14px;">{valid}</p>
<p style="font-size:14px;font-weight:bold;">{share}</p>
<p style="font-size:12px;color:#555555;">{ignore}</p>
</body>
</html>
"""


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str

    def __repr__(self) -> str:  # the bodies hold the code
        return f"EmailContent(subject={self.subject!r})"


def render(message: Message) -> EmailContent:
    """The subject and both bodies in the message's locale (English when unknown)."""
    lang = message.locale if message.locale in EMAIL_TEMPLATES else "en"
    parts = [
        p.format(service=message.service_name, minutes=message.minutes)
        for p in EMAIL_TEMPLATES[lang]
    ]
    subject, lead, valid, share, ignore = parts
    payment = ""
    if message.amount is not None and message.payee is not None:
        payment = PAYMENT_LINES[lang].format(amount=message.amount, payee=message.payee)
    paid = f"{payment}\n\n" if payment else ""
    text = f"{lead}\n\n    {message.code}\n\n{paid}{valid}\n\n{share}\n\n{ignore}\n"
    esc = [html.escape(p) for p in parts]
    body = _HTML.format(
        lang=lang,
        subject=esc[0],
        lead=esc[1],
        code=html.escape(message.code),
        payment=f'<p style="font-size:16px;">{html.escape(payment)}</p>\n' if payment else "",
        valid=esc[2],
        share=esc[3],
        ignore=esc[4],
    )
    return EmailContent(subject, text, body)


def mime_message(message: Message, sender: str) -> EmailMessage:
    """A ``multipart/alternative`` message (text, then HTML) from ``sender``, the
    service name as the display name."""
    content = render(message)
    mail = EmailMessage()
    mail["Subject"] = content.subject
    mail["From"] = formataddr((message.service_name, sender))
    mail["To"] = message.to
    domain = sender.rpartition("@")[2] or None
    mail["Message-ID"] = make_msgid(idstring=message.verification_id, domain=domain)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a code
    mail.set_content(content.text)
    mail.add_alternative(content.html, subtype="html")
    return mail
