"""Zip containers (docx, pptx, odt/odp/ods, epub) opened within fixed bounds.

An office document is a zip of XML. Before any library reads one, its directory is checked: too
many members, a member that would inflate past a limit or far past its compressed size (a zip
bomb), an encrypted member, a member name that escapes the archive, and XML that declares
entities (billion laughs) are each refused with the reason, so a hostile file costs a bounded
amount of memory and time and the rest of a run goes on.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

from lcdoc.errors import InputFileError

ZIP_MAGIC = b"PK\x03\x04"
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 256 << 20  # what one member may inflate to
MAX_TOTAL_BYTES = 512 << 20  # and all of them together
# Text and XML compress 5-20x; a member that inflates more than this, past 1 MiB, is a bomb.
MAX_RATIO = 200
_ENTITY = re.compile(rb"<!ENTITY", re.I)

# What marks each document format inside its zip: (format, member that must be there).
FORMATS = (("docx", "word/document.xml"), ("pptx", "ppt/presentation.xml"),
           ("epub", "META-INF/container.xml"))
ODF_TYPES = {"application/vnd.oasis.opendocument.text": "odt",
             "application/vnd.oasis.opendocument.presentation": "odp",
             "application/vnd.oasis.opendocument.spreadsheet": "ods",
             "application/epub+zip": "epub"}


def open_archive(data: bytes, name: str) -> zipfile.ZipFile:
    """The zip, once its directory passes every bound; InputFileError naming the first that
    does not."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise InputFileError(name, f"damaged or truncated zip container ({e})") from e
    if len(infos) > MAX_MEMBERS:
        raise InputFileError(name, f"{len(infos):,} members in its zip (more than "
                                   f"{MAX_MEMBERS:,}): refused")
    total = 0
    for i in infos:
        if i.flag_bits & 0x1:
            raise InputFileError(name, "encrypted (password-protected): save it without a "
                                       "password to read it")
        path = PurePosixPath(i.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise InputFileError(name, f"a member named {i.filename!r} points outside the "
                                       f"archive (path traversal): refused")
        if i.file_size > MAX_MEMBER_BYTES or (
                i.file_size > 1 << 20 and i.file_size > MAX_RATIO * max(1, i.compress_size)):
            raise InputFileError(name, f"member {i.filename!r} inflates to "
                                       f"{i.file_size / 2**20:,.0f} MiB from "
                                       f"{i.compress_size:,} bytes (a zip bomb?): refused")
        total += i.file_size
    if total > MAX_TOTAL_BYTES:
        raise InputFileError(name, f"its members inflate to {total / 2**20:,.0f} MiB in all "
                                   f"(more than {MAX_TOTAL_BYTES >> 20} MiB): refused")
    return z


def read_member(z: zipfile.ZipFile, member: str, name: str) -> bytes:
    """One member's bytes (at most its declared size, which open_archive bounded); its CRC is
    checked, so a member that lies about its size is named as damaged."""
    try:
        return z.read(member)
    except KeyError as e:
        raise InputFileError(name, f"no {member} in its zip: not a complete document") from e
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise InputFileError(name, f"damaged zip member {member} ({e})") from e


def check_xml(z: zipfile.ZipFile, name: str) -> None:
    """Refuse a container whose XML declares entities: no office format needs them, and
    expanding them is how a few KB of XML becomes gigabytes (billion laughs)."""
    for i in z.infolist():
        if i.filename.lower().endswith((".xml", ".rels", ".xhtml", ".html", ".htm", ".opf",
                                        ".ncx")):
            if _ENTITY.search(read_member(z, i.filename, name)):
                raise InputFileError(name, f"{i.filename} declares XML entities (entity "
                                           f"expansion, 'billion laughs'): refused")


def container_format(z: zipfile.ZipFile) -> str | None:
    """docx, pptx, odt, odp, ods or epub, from the members; None for any other zip."""
    names = set(z.namelist())
    if "mimetype" in names:
        try:
            kind = ODF_TYPES.get(z.read("mimetype")[:100].decode("ascii", "replace").strip())
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
            kind = None
        if kind:
            return kind
    for kind, member in FORMATS:
        if member in names:
            return kind
    return None


def sniff_container(path: str) -> str | None:
    """The document format of a zip file on disk, from its directory only (cheap: the folder
    walk asks it of every zip); None when it is not a document or not a readable zip."""
    try:
        with zipfile.ZipFile(path) as z:
            return container_format(z)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return None
