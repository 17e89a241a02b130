"""The defaults Pli ships: the policy ``pli init`` installs, its domain lists and the
notice templates. They travel inside the package (a wheel carries them), and are found
with importlib.resources wherever Pli is installed.

``default.toml``, ``lists/`` and ``templates/`` in this folder are the files themselves;
this module only says where they are, and copies them into a practice's folder.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from gateway.errors import ConfigError

POLICY = "default.toml"
LISTS = "lists"
TEMPLATES = "templates"
# What a usable installation has; the first missing one is named in the error.
NEEDED = (POLICY, f"{LISTS}/consumer-smtp.txt", f"{LISTS}/consumer-webmail.txt",
          f"{LISTS}/health-secure.txt", f"{LISTS}/mssante-whitelist.txt",
          f"{LISTS}/internal.txt",
          f"{TEMPLATES}/fr/default/notice.txt", f"{TEMPLATES}/en/default/notice.txt")


def folder() -> Path:
    """The folder holding the shipped defaults; ConfigError, saying what is missing and
    what to do, when this installation of Pli lacks them."""
    where = resources.files(__name__)
    if not isinstance(where, Path):
        raise ConfigError(f"Pli's default policy, lists and templates are inside {where}, "
                          "not in a folder: install Pli from its wheel with pip, unpacked")
    for name in NEEDED:
        if not (where / name).is_file():
            raise ConfigError(
                f"Pli's default policy, lists and templates cannot be found: {where / name} "
                "is missing from this installation of Pli. Reinstall Pli from its wheel "
                "(pip install --force-reinstall pli-VERSION-py3-none-any.whl), or give "
                "the configuration its own policy.toml, lists/ and templates/")
    return where


def copy_into(target: Path, *, domain: str | None = None) -> list[Path]:
    """Copy the default policy, lists and templates into ``target`` (a practice's folder)
    and write ``domain`` into its internal list; return what was created. Nothing is
    written when the defaults cannot be found."""
    source = folder()
    shutil.copyfile(source / POLICY, target / "policy.toml")
    shutil.copytree(source / LISTS, target / LISTS, dirs_exist_ok=True)
    shutil.copytree(source / TEMPLATES, target / TEMPLATES, dirs_exist_ok=True)
    if domain:
        with (target / LISTS / "internal.txt").open("a", encoding="utf-8") as handle:
            handle.write(f"{domain}\n")
    return [target / "policy.toml", target / LISTS, target / TEMPLATES]
