from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy import consumer_smtp_reason, import_list
from gateway.policy.lists import parse_list

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "gateway" / "defaults" / "lists"

HEADER = "# Secure health messaging.\n# Keep this header.\n\n"


def list_file(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "health-secure.txt"
    path.write_text(HEADER + entries, encoding="utf-8")
    return path


def entries(path: Path) -> list[str]:
    return [p.text for p in parse_list(path.read_text(encoding="utf-8"))[0]]


def test_importing_plain_text_replaces_the_entries_and_keeps_the_header(tmp_path: Path) -> None:
    dest = list_file(tmp_path, "old.mssante.fr\nkept.mssante.fr\n")
    source = tmp_path / "download.txt"
    source.write_text("kept.mssante.fr\nnew.mssante.fr\nNEW.mssante.fr\n\n", encoding="utf-8")
    summary = import_list(source, dest)
    assert (summary.added, summary.removed, summary.unchanged) == (1, 1, 1)
    assert dest.read_text(encoding="utf-8").startswith(HEADER)
    assert entries(dest) == ["kept.mssante.fr", "new.mssante.fr"]


def test_importing_csv_takes_the_column_that_holds_domains(tmp_path: Path) -> None:
    dest = list_file(tmp_path, "")
    source = tmp_path / "whitelist.csv"
    source.write_text(
        "operateur;domaine;date\n"
        "CHU Exemple;chu-exemple.mssante.fr;2024-01-01\n"
        "Clinique;clinique.example.fr;2024-02-01\n"
        "Opérateur;Hôpital.fr;2024-03-01\n",
        encoding="utf-8",
    )
    summary = import_list(source, dest)
    assert summary.added == 3
    assert entries(dest) == ["chu-exemple.mssante.fr", "clinique.example.fr", "xn--hpital-ixa.fr"]


def test_an_import_with_no_domain_leaves_the_list_as_it_was(tmp_path: Path) -> None:
    dest = list_file(tmp_path, "kept.mssante.fr\n")
    before = dest.read_text(encoding="utf-8")
    source = tmp_path / "wrong.txt"
    source.write_text("this is not a whitelist\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no domain found"):
        import_list(source, dest)
    assert dest.read_text(encoding="utf-8") == before


def test_importing_into_a_new_file_creates_it_with_a_header(tmp_path: Path) -> None:
    source = tmp_path / "partners.txt"
    source.write_text("labo.example.fr\n", encoding="utf-8")
    dest = tmp_path / "lists" / "partners.txt"
    dest.parent.mkdir()
    summary = import_list(source, dest)
    assert (summary.added, summary.removed, summary.unchanged) == (1, 0, 0)
    assert dest.read_text(encoding="utf-8").startswith("#")
    assert entries(dest) == ["labo.example.fr"]


def test_an_import_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    dest = list_file(tmp_path, "")
    source = tmp_path / "src.txt"
    source.write_text("a.example.fr\n", encoding="utf-8")
    import_list(source, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health-secure.txt", "src.txt"]


def test_the_summary_reads_as_a_sentence(tmp_path: Path) -> None:
    dest = list_file(tmp_path, "a.example.fr\n")
    source = tmp_path / "src.txt"
    source.write_text("a.example.fr\nb.example.fr\n", encoding="utf-8")
    assert str(import_list(source, dest)) == "2 entries: 1 added, 0 removed, 1 unchanged"


@pytest.mark.parametrize(
    "host", ["smtp.gmail.com", "SMTP.Orange.fr", "smtp-mail.outlook.com", "smtp.free.fr", "mail.gmx.net"]
)
def test_consumer_smtp_hosts_are_refused_with_a_reason(host: str) -> None:
    reason = consumer_smtp_reason(host, SHIPPED)
    assert reason is not None
    assert host in reason and "consumer" in reason


@pytest.mark.parametrize("host", ["smtp.office365.com", "smtp-relay.gmail.com", "mail.cabinet.fr", "127.0.0.1"])
def test_professional_smtp_hosts_are_accepted(host: str) -> None:
    assert consumer_smtp_reason(host, SHIPPED) is None


def test_a_consumer_smtp_host_given_with_its_port_is_refused() -> None:
    assert consumer_smtp_reason("smtp.gmail.com:587", SHIPPED) is not None


def test_a_missing_consumer_smtp_list_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="consumer-smtp.txt"):
        consumer_smtp_reason("smtp.gmail.com", tmp_path)


@pytest.mark.parametrize("name", ["consumer-webmail", "consumer-smtp", "health-secure", "internal",
                                  "mssante-whitelist"])
def test_every_shipped_list_parses_without_a_bad_line(name: str) -> None:
    _, bad = parse_list((SHIPPED / f"{name}.txt").read_text(encoding="utf-8"))
    assert bad == []


def test_the_secure_health_list_does_not_trust_every_mssante_subdomain() -> None:
    assert "*.mssante.fr" not in entries(SHIPPED / "health-secure.txt")
