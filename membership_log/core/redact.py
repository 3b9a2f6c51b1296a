"""Secrets out of messages: the one place a URL's password is masked.

Database and Alertmanager URLs may carry a password (``postgresql://u:pw@h/db``,
``http://user:pw@am:9093``); every message, log line and stored target name that shows a URL
goes through :func:`mask_url`, and every error text that may quote one through
:func:`mask_in`. Pure and stdlib-only: the handler's spool message uses it too.
"""

from __future__ import annotations


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs. Never raises.

    Done by hand, without SQLAlchemy (which the handler never imports, and which cannot parse
    the very URLs whose errors we are reporting, e.g. ``postgresql://u:pw@h:notaport/db``).
    After ``scheme://``, a user name runs to the first ``:`` (no ``/`` before it); the
    password then runs to the *last* ``@``. Taking the last ``@`` may hide more than the
    password (an ``@`` in the database name), never less (an ``@`` in the password).
    """
    try:
        if not isinstance(url, str):
            url = str(url)
        scheme_end = url.find("://")
        if scheme_end < 0:
            return url  # a plain path: no password to hide
        start = scheme_end + 3
        colon = url.find(":", start)
        slash = url.find("/", start)
        at = url.rfind("@")
        if colon >= 0 and not (0 <= slash < colon) and at > colon + 1:
            head, tail = url[: colon + 1] + "***", url[at:]
        else:  # no user:password before the path, or an empty password
            head, tail = "", url
        return head + _mask_query_password(tail)
    except Exception:  # never let masking a secret be the error that shows it
        return "<database URL hidden>"


def _mask_query_password(text: str) -> str:
    """``?password=...`` (libpq takes it in the query too) -> ``?password=***``."""
    out, pos = [], 0
    low = text.lower()
    while (i := low.find("password=", pos)) >= 0:
        if i > 0 and low[i - 1] not in "?&":
            out.append(text[pos : i + 9])
            pos = i + 9
            continue
        end = text.find("&", i + 9)
        end = len(text) if end < 0 else end
        out.append(text[pos : i + 9] + ("***" if end > i + 9 else ""))
        pos = end
    return "".join(out) + text[pos:]


def mask_in(text: str, url: str | None) -> str:
    """``text`` (an error message, say) with ``url`` and its password masked wherever they
    appear, however the driver quoted them."""
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    start = url.find("://") + 3
    colon, at = url.find(":", start), url.rfind("@")
    if start >= 3 and 0 <= colon < at - 1:
        text = text.replace(url[colon + 1:at], "***")  # the password, however quoted
    return text


def first_line(e: BaseException, url: str | None = None) -> str:
    """An exception as one line, with any password from ``url`` masked."""
    text = str(e).strip()
    return mask_in(text.splitlines()[0] if text else type(e).__name__, url)
