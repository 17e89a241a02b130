"""The standard library's parser as an oracle: on real message shapes and on generated
ones, Pli's scanner finds the same parts, with the same types, file names and decoded
bytes. (Where Pli reads more on purpose, its own tests say so: an encoded word in an
unquoted parameter, a Windows path as a file name, base64 after padding, a delivery
report kept as one file.)"""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import urllib.parse
from email.message import EmailMessage
from email.message import Message as StdMessage
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.inspect import inspect
from gateway.intake.data import normalise_line_endings
from gateway.message.model import Message
from gateway.message.params import raw_file_name
from gateway.message.scan import Part

Tree = tuple[Any, ...]


def ours(raw: bytes) -> Tree:
    message = Message.from_bytes(raw)
    names = {id(leaf.part): leaf.filename for leaf in inspect(message).leaves}

    def node(part: Part) -> Tree:
        if part.kind == "multipart":
            return ("multipart", part.content_type, tuple(node(c) for c in part.children))
        if part.kind == "message":
            return ("message", part.content_type, tuple(node(c) for c in part.children))
        name = names.get(id(part), raw_file_name(part.header.get("content-disposition"),
                                                 "filename"))
        return ("leaf", part.content_type, name, b"".join(message.decoded(part)))
    return node(message.root)


def theirs(raw: bytes) -> Tree:
    def node(part: StdMessage) -> Tree:
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            assert isinstance(inner, list)
            return ("message", kind, tuple(node(m) for m in inner))
        if part.is_multipart():
            payload = part.get_payload()
            assert isinstance(payload, list)
            return ("multipart", kind, tuple(node(m) for m in payload))
        data = part.get_payload(decode=True)
        return ("leaf", kind, part.get_filename(), data if isinstance(data, bytes) else b"")
    return node(email.message_from_bytes(raw, policy=email.policy.default))


def crlf(message: EmailMessage) -> bytes:
    return normalise_line_endings(message.as_bytes())


# -- message shapes the test suite and practices use ----------------------------------------

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def _letter(subject: str = "Résultats") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Dr Martin <dr.martin@cabinet-martin.fr>"
    message["To"] = "patient@gmail.com"
    message["Subject"] = subject
    message.set_content("Bonjour,\nvoici vos résultats.\n")
    return message


def corpus() -> list[bytes]:
    plain = _letter()
    alternative = _letter()
    alternative.add_alternative("<p>Bonjour, <b>voici</b> vos résultats.</p>", subtype="html")
    attached = _letter()
    attached.add_attachment(PDF, maintype="application", subtype="pdf", filename="compte-rendu.pdf")
    attached.add_attachment(PNG, maintype="image", subtype="png", filename="radio épaule.png")
    attached.add_attachment("nom;date\nDupont;2026-11-02\n", subtype="csv", filename="liste.csv")
    related = _letter()
    related.add_alternative('<p>Bonjour</p><img src="cid:logo@cabinet">', subtype="html")
    html = related.get_body(("html",))
    assert html is not None
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo@cabinet>")
    forwarded = _letter("TR: compte rendu")
    inner = _letter("compte rendu")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="cr.pdf")
    forwarded.add_attachment(inner)
    calendar = _letter("Rendez-vous")
    calendar.add_attachment("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n",
                            subtype="calendar", filename="rdv.ics")
    tnef = _letter()
    tnef.add_attachment(b"\x78\x9f\x3e\x22" + bytes(40), maintype="application",
                        subtype="ms-tnef", filename="winmail.dat")
    qp = _letter()
    qp.set_content("Résultat détaillé " * 30 + "\n", cte="quoted-printable")
    latin = (b"From: dr@cabinet.fr\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: text/plain; charset=iso-8859-1\r\n"
             b"Content-Transfer-Encoding: 8bit\r\n\r\nR\xe9sultats\r\n")
    no_mime = b"From: dr@cabinet.fr\r\nSubject: x\r\n\r\nTexte sans MIME.\r\n"
    digest = (b'From: a@b.fr\r\nContent-Type: multipart/digest; boundary="d"\r\n\r\n'
              b"--d\r\n\r\nSubject: un\r\n\r\nun\r\n--d\r\n\r\nSubject: deux\r\n\r\ndeux\r\n"
              b"--d--\r\n")
    preamble = (b'From: a@b.fr\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; '
                b'boundary="=_x"\r\n\r\nThis is a multi-part message.\r\n\r\n--=_x\r\n'
                b"Content-Type: text/plain\r\n\r\ntexte\r\n--=_x \t\r\nContent-Type: "
                b"application/pdf; name=\"cr.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes(PDF).replace(b"\n", b"\r\n") + b"--=_x--\r\nepilogue\r\n")
    unclosed = (b'From: a@b.fr\r\nContent-Type: multipart/mixed; boundary="u"\r\n\r\n'
                b"--u\r\n\r\nun\r\n--u\r\n\r\ndeux\r\n")
    return [crlf(m) for m in (plain, alternative, attached, related, forwarded, calendar,
                              tnef, qp)] + [latin, no_mime, digest, preamble, unclosed] + \
        suite_messages()


def suite_messages() -> list[bytes]:
    """The messages other tests of the suite send through Pli, built by their own code."""
    import binascii

    from bench.relay_throughput import make_message
    from tests.inspect.test_mime import letter
    from tests.intake.test_submission import message as submitted
    from tests.spool.helpers import message as spooled
    from tests.test_policy_wiring import mail
    from tests.transform.test_protect import original

    every_kind = original()
    uu = "begin 644 scan-uu.bin\n" + "".join(
        binascii.b2a_uu(PDF[i:i + 45]).decode() for i in range(0, len(PDF), 45)) + "`\nend\n"
    every_kind.add_attachment("Voir ci-joint.\n" + uu, filename="note.txt")
    inner = _letter("compte rendu")
    every_kind.add_attachment(inner)
    every_kind.add_attachment(b"\x78\x9f\x3e\x22" + bytes(40), maintype="application",
                              subtype="ms-tnef", filename="winmail.dat")
    every_kind.add_attachment(PNG, maintype="image", subtype="png", disposition="inline")
    with_pdf = letter()
    with_pdf.add_attachment(PDF, maintype="text", subtype="plain", filename="notes.txt")
    built = [original(), original("Résultats [code:4821]"), every_kind, letter(), with_pdf,
             mail("patient@gmail.com"), mail("dr.durand@cabinet-martin.fr")]
    return [crlf(m) for m in built] + [normalise_line_endings(m) for m in (
        spooled(), spooled(body="Résultats\n" + "x" * 2000), submitted(),
        submitted(complete=False))] + [make_message(1, "dr.martin@cabinet-martin.fr")]


def test_the_scanner_reads_every_message_of_the_corpus_as_the_standard_library() -> None:
    for raw in corpus():
        assert ours(raw) == theirs(raw), raw[:200]


# -- generated messages -----------------------------------------------------------------------

TEXT = st.text(alphabet=st.sampled_from("abcdefghij KLMNOPéà.,;:!?-\n"), max_size=300)
NAMES = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from("abcdefgh0123456789-_"), min_size=1, max_size=12)
      .map(lambda s: ("plain", s + ".pdf")),
    st.text(alphabet=st.sampled_from("abc éèà-_0123"), min_size=1, max_size=12)
      .map(lambda s: ("quoted", s.strip() + ".pdf")),
    st.text(alphabet=st.sampled_from("abc éèà-_0123"), min_size=1, max_size=12)
      .map(lambda s: ("2231", s.strip() + ".pdf")),
    st.text(alphabet=st.sampled_from("abc éèà-_0123"), min_size=1, max_size=12)
      .map(lambda s: ("2047", s.strip() + ".pdf")),
)


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text/plain", "text/html", "application/pdf", "image/png",
                                 "application/octet-stream", "text/calendar", None]))
    binary = kind in ("application/pdf", "image/png", "application/octet-stream")
    cte = draw(st.sampled_from(["base64", "quoted-printable"] if binary else
                               ["7bit", "8bit", "base64", "quoted-printable", None]))
    data = draw(st.binary(max_size=300)) if binary else draw(TEXT).encode("utf-8")
    return {"kind": kind, "cte": cte, "data": data, "name": draw(NAMES)}


def trees() -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves(),
        lambda children: st.one_of(
            st.tuples(st.sampled_from(["mixed", "alternative", "related"]),
                      st.lists(children, min_size=1, max_size=4), TEXT, TEXT),
            st.tuples(st.just("rfc822"), children),
        ),
        max_leaves=8,
    )


def render(node: Any, counter: list[int]) -> bytes:
    if isinstance(node, dict):
        return _render_leaf(node)
    if node[0] == "rfc822":
        return (b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
                + render(node[1], counter))
    subtype, children, preamble, epilogue = node
    counter[0] += 1
    boundary = f"=_b{counter[0]}_x"
    out = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode(),
           _lines(preamble)]
    for child in children:
        out.append(f"\r\n--{boundary}\r\n".encode() + render(child, counter))
    out.append(f"\r\n--{boundary}--\r\n".encode() + _lines(epilogue))
    return b"".join(out)


def _lines(text: str) -> bytes:
    """Text with no line that could be taken for a boundary."""
    return text.replace("-", "_").replace("\n", "\r\n").encode("utf-8")


def _render_leaf(leaf: dict[str, Any]) -> bytes:
    head = []
    if leaf["kind"] is not None:
        head.append(f"Content-Type: {leaf['kind']}; charset=utf-8")
    name = leaf["name"]
    if name is not None:
        form, value = name
        if form == "plain":
            head.append(f"Content-Disposition: attachment; filename={value}")
        elif form == "quoted":
            head.append(f'Content-Disposition: attachment; filename="{value}"')
        elif form == "2231":
            head.append("Content-Disposition: attachment; filename*=utf-8''"
                        + urllib.parse.quote(value))
        else:
            word = base64.b64encode(value.encode()).decode()
            head.append(f'Content-Disposition: attachment; filename="=?utf-8?b?{word}?="')
    data = leaf["data"]
    if leaf["cte"] is not None:
        head.append(f"Content-Transfer-Encoding: {leaf['cte']}")
    if leaf["cte"] == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif leaf["cte"] == "quoted-printable":
        body = quopri.encodestring(data).replace(b"\n", b"\r\n")
    else:
        body = _lines(data.decode("utf-8"))
    return "".join(h + "\r\n" for h in head).encode() + b"\r\n" + body


@settings(max_examples=400, deadline=None)
@given(trees())
def test_the_scanner_reads_generated_messages_as_the_standard_library(tree: Any) -> None:
    raw = b"From: dr@cabinet.fr\r\nMIME-Version: 1.0\r\n" + render(tree, [0])
    assert ours(raw) == theirs(raw)
