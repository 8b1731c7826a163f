"""The CSV drop folder, file side: which files are ready, how to read them, where they go.

Owns `inbox/`, `outbox/`, `archive/` and `failed/` under one folder; detects a file's encoding,
delimiter and email column; streams its rows; writes `outbox/<stem>.verified.csv` atomically with
the `mailprobe_*` columns appended. Knows files and CSV only: no SMTP, no database, no engine
calls. The pipeline (mailprobe/pipeline.py) drives it and decides what each row's fields are.

Decisions, so the pipeline and users can rely on them:

- Encoding: a UTF-8 or UTF-16 byte order mark decides; otherwise strict UTF-8 if the whole file
  decodes, else cp1252 (what Excel on Windows writes; a superset of Latin-1's printable
  characters), else Latin-1 (decodes anything). NUL bytes make a file "not a CSV".
- Rows: `row_number` counts data records from 1, header excluded. Blank lines (nothing, or only
  whitespace, between line breaks) are skipped and not counted, in `rows()` and in
  `write_verified()` alike, so both number rows identically. A line of empty cells (`,,,`) is a
  row. Quotes follow RFC 4180 strictly: a quote that is never closed or is followed by other text
  fails the file with its line number instead of silently merging rows.
- A file whose single column's first cell holds an "@" is a headerless list of addresses; its
  output gets a header row (`email` and the `mailprobe_*` names) so the columns are named.
- Output: every original cell, in order; the `mailprobe_*` columns (which ones: `columns`,
  csvcolumns.py) follow the header's columns (cells of a ragged row beyond the header move after
  them, so every column stays under its header). A `mailprobe_*` column already in the input (a
  verified file dropped again, or an output rewritten from itself with newer answers) is updated
  in place, not duplicated. UTF-8, same delimiter, CRLF line ends; a byte order mark when the
  input had one or was in a legacy 8-bit encoding (Excel needs it to read accents as UTF-8).
- Hostile files: only regular files are read, each opened with O_NOFOLLOW and checked with
  S_ISREG on the opened descriptor, so a symlink (`inbox/x.csv -> /etc/...`), a FIFO or a
  device is refused (moved to failed/), never followed; a sub-folder that is a symlink (an
  `outbox/` redirecting outputs) stops the pass with a clear message. Failure notes never quote
  the file's contents. An output never replaces another: `list.csv`, `list.CSV` or the same name
  dropped again get `list.verified.csv`, `list.2.verified.csv`...
- Formula injection (OWASP "CSV Injection"): a cell starting with = + - @ tab CR or LF gets a
  leading `'`, original cells too, except plain numbers (`-12.5`, `+33`), which cannot carry a
  formula (only digits, a sign, dots and commas) and would otherwise turn into text.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import os
import re
import secrets
import shutil
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mailprobe.engine.result import format_time
from mailprobe.engine.untrusted import clean_text

from .base import FieldValue
from .csvcolumns import ALL_NAMES, COLUMN_NAMES, Columns
from .errors import ConnectorError, SkippableRecordError
from .fields import FIELD_NAMES, field_text

#: Bytes read per step when checking a file's encoding; the file is never held whole.
_CHUNK = 1 << 20
#: Characters of the file's start given to csv.Sniffer.
_SAMPLE_CHARS = 64 * 1024
_DELIMITERS = ",;\t|"
_FORMULA_START = frozenset("=+-@\t\r\n")
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d.,]*")
_FIELD_PREFIX = "mailprobe_"
#: Headers that name the email column, in priority order (compared after _header_key()).
_EMAIL_HEADERS = (
    "email",
    "e-mail",
    "Email Address",
    "E-Mail Address",
    "E-Mail-Adresse",
    "emailaddress",
    "mail",
    "mail address",
    "courriel",
    "adresse e-mail",
    "adresse électronique",
    "correo",
    "correo electrónico",
    "dirección de correo electrónico",
    "endereço de e-mail",
    "indirizzo email",
    "e-mailadres",
    "e-post",
    "e-postadresse",
    "e-postadress",
    "sähköposti",
    "adres e-mail",
)
#: Magic numbers of files people rename to .csv, with what to tell them.
_NOT_CSV_MAGIC = (
    (b"PK\x03\x04", "it is an Excel workbook (.xlsx) or a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "it is an old Excel workbook (.xls)"),
    (b"%PDF", "it is a PDF"),
)
_EXPORT_HINT = "export it from your spreadsheet as 'CSV UTF-8'"


class DropFolderError(ConnectorError):
    """The drop folder itself cannot be used safely (a sub-folder is a symlink); fix it."""


class CsvFileError(SkippableRecordError):
    """A dropped file cannot be used; `external_id` is its name, str() says what to fix."""

    def __init__(
        self, file_name: str, reason: str, *, line: int | None = None, connector: str = "csv"
    ) -> None:
        super().__init__(connector, reason, external_id=file_name)
        self.reason = reason
        self.line = line  # the file's line (1-based) where the problem is, when known

    def __str__(self) -> str:
        return self.reason


# --------------------------------------------------------------------------- the folder


@dataclass(frozen=True, slots=True)
class DropFolder:
    """inbox/, outbox/, archive/, failed/ under one folder."""

    folder: Path
    _: KW_ONLY
    settle_s: float = 5.0
    email_column: str | None = None
    columns: Columns = Columns.FULL

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def column_names(self) -> tuple[str, ...]:
        """Return the mailprobe_* columns an output gets, in order (`columns: full|basic`)."""
        return COLUMN_NAMES[self.columns]

    @property
    def inbox(self) -> Path:
        """Return where people drop files."""
        return self.folder / "inbox"

    @property
    def outbox(self) -> Path:
        """Return where verified files appear."""
        return self.folder / "outbox"

    @property
    def archive_dir(self) -> Path:
        """Return where inputs go once their output is complete."""
        return self.folder / "archive"

    @property
    def failed_dir(self) -> Path:
        """Return where unusable inputs go, each with a `.error.txt` saying why."""
        return self.folder / "failed"

    def ensure_layout(self) -> None:
        """Create the four folders when missing and remove outputs a crash left half-written.

        Raises DropFolderError when one of them is a symlink: a link could send outputs, or
        inputs moved to archive/, anywhere the service may write.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in (self.inbox, self.outbox, self.archive_dir, self.failed_dir):
            if path.is_symlink():
                raise DropFolderError(
                    "csv",
                    f"{path} is a symbolic link; mailprobe refuses to follow it (it could "
                    "redirect files anywhere): make it a real folder",
                )
            path.mkdir(exist_ok=True)
        # Only one pass works a drop folder at a time, so a temp file here is a dead pass's.
        for stale in self.outbox.glob(".*.verified.csv.*.tmp"):
            stale.unlink(missing_ok=True)

    def ready_files(self, *, now: float | None = None) -> list[Path]:
        """Return inbox CSV files unchanged for `settle_s` seconds, sorted by name.

        A file still being copied keeps changing its mtime; waiting for it to settle avoids
        reading half a file. `*.part`, dot-files (our temp files, editors' locks), Excel's `~$`
        lock files and directories are never taken.
        """
        if not self.inbox.is_dir():
            return []
        moment = time.time() if now is None else now
        ready = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                if not _is_candidate(entry.name):
                    continue
                with suppress(FileNotFoundError):  # removed while we looked
                    # A symlink is listed, never followed: open() refuses it, so it moves
                    # to failed/ with a note instead of sitting in the inbox unexplained.
                    info = entry.stat(follow_symlinks=False)
                    kind_ok = entry.is_file(follow_symlinks=False) or entry.is_symlink()
                    if kind_ok and moment - info.st_mtime >= self.settle_s:
                        ready.append(Path(entry.path))
        return sorted(ready, key=lambda path: path.name)

    def settling_files(self, *, now: float | None = None) -> list[tuple[Path, float]]:
        """Return inbox CSV files still changing, each with the seconds until it is settled."""
        if not self.inbox.is_dir():
            return []
        moment = time.time() if now is None else now
        settling = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                if not _is_candidate(entry.name):
                    continue
                with suppress(FileNotFoundError):  # removed while we looked
                    if entry.is_file(follow_symlinks=False):
                        left = self.settle_s - (moment - entry.stat().st_mtime)
                        if left > 0:
                            settling.append((Path(entry.path), left))
        return sorted(settling, key=lambda item: item[0].name)

    def open(self, path: Path) -> CsvTable:
        """Return the file's layout (encoding, delimiter, header, email column), read lazily.

        Raises CsvFileError naming what is wrong: empty, undecodable, not a CSV, no email column.
        """
        try:
            encoding, has_bom = detect_encoding(path)
            delimiter = detect_delimiter(path, encoding)
            with closing(_records(path, encoding=encoding, delimiter=delimiter)) as records:
                first = next(records, None)
        except OSError as exc:
            raise CsvFileError(path.name, f"cannot read the file: {exc.strerror}") from exc
        if first is None:
            raise CsvFileError(path.name, "file is empty")
        header, email_index = find_email_column(path.name, first[1], self.email_column)
        return CsvTable(
            path=path,
            encoding=encoding,
            delimiter=delimiter,
            header=header,
            email_index=email_index,
            has_bom=has_bom,
        )

    def output_path(self, path: Path) -> Path:
        """Return a free name for the verified copy of `path`: outbox/<stem>.verified.csv, or
        <stem>.<n>.verified.csv when taken (list.csv and list.CSV, or a name dropped again):
        an output never replaces another. One pass works a folder at a time, so a free name
        stays free until the output is renamed onto it."""
        target = self.outbox / f"{path.stem}.verified.csv"
        counter = 1
        while _taken(target):
            counter += 1
            target = self.outbox / f"{path.stem}.{counter}.verified.csv"
        return target

    def archive(self, path: Path) -> Path:
        """Move a processed input to archive/ and return its new path (renamed if taken)."""
        return _move(path, self.archive_dir)

    def fail(self, path: Path, reason: str) -> Path:
        """Move an unusable input to failed/, explain why in `<name>.error.txt`, return its path."""
        target = _move(path, self.failed_dir)
        note = target.with_name(f"{target.name}.error.txt")
        with _atomic_text(note, encoding="utf-8") as stream:
            stream.write(_error_note(path.name, reason))
        return target


def _taken(path: Path) -> bool:
    """Return True when a file (or a dangling link) has the name, in any letter case."""
    if path.is_symlink() or path.exists():
        return True
    folded = path.name.casefold()
    with os.scandir(path.parent) as entries:
        return any(entry.name.casefold() == folded for entry in entries)


def _is_candidate(name: str) -> bool:
    """Return True when an inbox entry's name is one we may take (a visible *.csv)."""
    return name.lower().endswith(".csv") and not name.startswith((".", "~$"))


def _move(path: Path, folder: Path) -> Path:
    """Move `path` into `folder` under its name, or `<stem>.<n><suffix>` when that is taken.

    One connector pass runs at a time, so checking for a free name then moving is safe.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    counter = 1
    while target.exists() or target.with_name(f"{target.name}.error.txt").exists():
        counter += 1
        target = folder / f"{path.stem}.{counter}{path.suffix}"
    # shutil.move, not os.replace: archive/ may be another file system than inbox/.
    return Path(shutil.move(path, target))


def _error_note(name: str, reason: str) -> str:
    """Return the text of a failed file's `.error.txt`: what went wrong and what to do."""
    when = format_time(datetime.now(UTC))
    return (
        f"mailprobe could not verify {clean_text(name, limit=255)} ({when}):\n\n"
        f"    {reason}\n\n"
        "Fix the file and drop it into inbox/ again.\n"
    )


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class CsvTable:
    """An opened drop file: how to read it and where its email column is; rows stream."""

    path: Path
    encoding: str  # a Python codec name: utf-8, utf-8-sig, utf-16, cp1252 or latin-1
    delimiter: str
    header: tuple[str, ...]  # () for a headerless list of addresses
    email_index: int
    has_bom: bool

    @property
    def has_header(self) -> bool:
        """Return False for a headerless list of addresses (its first line is a row)."""
        return bool(self.header)

    def rows(self) -> Iterator[tuple[int, str]]:
        """Yield (row_number, email cell stripped) per data row, streaming the file.

        Raises CsvFileError with the line number when the CSV breaks part-way.
        """
        for number, record in self._data_records():
            yield number, _cell(record, self.email_index).strip()

    def write_verified(
        self,
        out: Path,
        fields_for_row: Callable[[int, str], Mapping[str, FieldValue]],
        *,
        columns: tuple[str, ...] = FIELD_NAMES,
    ) -> int:
        """Write every row plus its mailprobe_* `columns` to `out` atomically; return rows written.

        The output appears whole or not at all: it is written to a dot-file beside `out`,
        fsynced, then renamed over it. `out` may be this table's own file (an output rewritten
        with newer answers): it is read to the end before the rename replaces it.
        """
        layout = _OutputLayout.of(self.header, columns)
        written = 0
        with _atomic_text(out, encoding=self._output_encoding) as stream:
            writer = csv.writer(stream, delimiter=self.delimiter, lineterminator="\r\n")
            writer.writerow(neutralised(layout.header))
            for number, record in self._data_records():
                values = fields_for_row(number, _cell(record, self.email_index).strip())
                writer.writerow(neutralised(layout.row(record, values)))
                written += 1
        return written

    @property
    def _output_encoding(self) -> str:
        """Return utf-8-sig when the output needs a byte order mark, else utf-8."""
        legacy = self.encoding in ("cp1252", "latin-1")
        return "utf-8-sig" if self.has_bom or legacy else "utf-8"

    def _data_records(self) -> Iterator[tuple[int, list[str]]]:
        """Yield (row_number, cells) per data record: header and blank lines left out."""
        records = _records(self.path, encoding=self.encoding, delimiter=self.delimiter)
        with closing(records):
            if self.has_header:
                next(records, None)
            for number, (_, record) in enumerate(records, start=1):
                yield number, record


def _cell(record: list[str], index: int) -> str:
    """Return a record's cell at `index`, or "" when the row is too short to have it."""
    return record[index] if index < len(record) else ""


@dataclass(frozen=True, slots=True)
class _OutputLayout:
    """Where each output cell comes from: the input's columns, then the mailprobe_* ones."""

    header: tuple[str, ...]
    width: int  # the input's column count; a ragged row is padded or split at it
    #: output index of each mailprobe_* field: in place when the input has the column already
    slots: Mapping[str, int]
    blanks: tuple[str, ...]  # one "" per appended field

    @classmethod
    def of(cls, header: tuple[str, ...], columns: tuple[str, ...] = FIELD_NAMES) -> _OutputLayout:
        """Return the layout for an input header (() for a headerless list).

        Any mailprobe_* column the input has is kept up to date in place, wanted or not; of
        `columns`, the missing ones are appended.
        """
        names = header or ("email",)
        present = {name.strip().lower(): index for index, name in enumerate(names)}
        appended = tuple(name for name in columns if name not in present)
        known = dict.fromkeys((*ALL_NAMES, *columns))
        slots = {name: present[name] for name in known if name in present}
        slots.update({name: len(names) + offset for offset, name in enumerate(appended)})
        return cls(names + appended, len(names), slots, ("",) * len(appended))

    def row(self, record: list[str], values: Mapping[str, FieldValue]) -> list[str]:
        """Return one output row: original cells, mailprobe_* values, then any extra cells.

        A field missing from `values` keeps the input's value (in place) or stays empty.
        """
        cells = record[: self.width]
        if len(cells) < self.width:
            cells += [""] * (self.width - len(cells))
        cells += self.blanks
        for name, value in values.items():
            index = self.slots.get(name)
            if index is not None:
                cells[index] = value if type(value) is str else format_value(value)
        if len(record) > self.width:
            cells += record[self.width :]
        return cells


#: A field value as CSV text (connectors.fields.field_text), cached: a million rows repeat the
#: same few flags, scores, dates and verification seconds. typed: True and 1 must not share.
format_value = functools.lru_cache(maxsize=4096, typed=True)(field_text)


def neutralise(cell: str) -> str:
    """Return the cell, prefixed with ' when a spreadsheet would run it as a formula."""
    if cell[:1] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def unneutralised(cell: str) -> str:
    """Return a cell as it was before neutralise() (reading back an output we wrote)."""
    if cell[:1] == "'" and cell[1:2] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(cell[1:]):
        return cell[1:]
    return cell


def neutralised(cells: Iterable[str]) -> list[str]:
    """Return a row's cells neutralised; inlined, as it runs for every cell of a million rows."""
    return [
        "'" + cell if cell[:1] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(cell) else cell
        for cell in cells
    ]


# --------------------------------------------------------------------------- reading


def _records(path: Path, *, encoding: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line, cells) per non-blank record, streaming; line is where the record starts.

    csv.Error and decoding errors become CsvFileError with the line, never a raw traceback.
    """
    with _open_text(path, encoding) as stream:
        reader = csv.reader(stream, delimiter=delimiter, strict=True)
        while True:
            line = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _broken_csv(path.name, exc, start=line, at=reader.line_num) from exc
            except UnicodeDecodeError as exc:  # the file changed since it was opened
                raise CsvFileError(path.name, f"cannot decode: {exc}", line=line) from exc
            if record and (len(record) > 1 or record[0].strip()):
                yield line, record


def open_regular(path: Path) -> io.BufferedReader:
    """Return the file open for reading in binary, refusing anything but a regular file.

    O_NOFOLLOW refuses a symlink as the last component; S_ISREG is checked on the opened
    descriptor, so a file swapped for a FIFO or device after listing is refused too; O_NONBLOCK
    keeps opening a FIFO from hanging. Raises CsvFileError saying what the entry is.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if path.is_symlink():
            raise CsvFileError(path.name, _NOT_REGULAR.format("a symbolic link")) from exc
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CsvFileError(path.name, _NOT_REGULAR.format("not a regular file"))
    os.set_blocking(fd, True)
    return open(fd, "rb")  # noqa: SIM115 (the caller closes it)


_NOT_REGULAR = "it is {}; mailprobe reads only regular files: drop the file itself"


def _open_text(path: Path, encoding: str) -> TextIO:
    """Return a regular file open as text for the csv module (newline="" as it asks)."""
    return io.TextIOWrapper(open_regular(path), encoding=encoding, newline="")


def _broken_csv(name: str, exc: csv.Error, *, start: int, at: int) -> CsvFileError:
    """Return the CsvFileError for a csv.Error, in words that say which line to fix."""
    text = str(exc)
    if "unexpected end of data" in text:
        why, line = f"line {start}: a quoted field starting on this line is never closed", start
    elif "field larger than field limit" in text:
        why = f"line {start}: a field is too long (a quote that is never closed?)"
        line = start
    elif "expected after" in text:
        why = f'line {at}: a closing quote is followed by other text (write a quote as "")'
        line = at
    else:
        why, line = f"line {at}: {text}", at
    return CsvFileError(name, f"not a CSV: {why}", line=line)


def detect_encoding(path: Path) -> tuple[str, bool]:
    """Return (codec, has_bom) for the file, having checked that all of it decodes.

    Written by hand: the rule is fixed (BOM, strict UTF-8, cp1252, Latin-1) and must be
    deterministic; statistical detectors (charset-normalizer) guess and are slow on big files.
    """
    with open_regular(path) as raw:
        head = raw.read(8)
    for magic, what in _NOT_CSV_MAGIC:
        if head.startswith(magic):
            raise CsvFileError(path.name, f"not a CSV: {what}; {_EXPORT_HINT}")
    if head.startswith(codecs.BOM_UTF8):
        return _checked(path, "utf-8-sig", "UTF-8"), True
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _checked(path, "utf-16", "UTF-16"), True
    for encoding in ("utf-8", "cp1252"):
        if _decode_error_line(path, encoding) is None:
            return encoding, False
    return _checked(path, "latin-1", "Latin-1"), False


def _checked(path: Path, encoding: str, label: str) -> str:
    """Return `encoding` once the whole file decodes with it; else raise CsvFileError."""
    line = _decode_error_line(path, encoding)
    if line is not None:
        why = f"cannot decode line {line} as {label}, the encoding the file declares"
        raise CsvFileError(path.name, f"{why}; {_EXPORT_HINT}", line=line)
    return encoding


def _decode_error_line(path: Path, encoding: str) -> int | None:
    """Return the line where decoding fails, or None; raise CsvFileError on a NUL character.

    Streams the file in chunks, so a large file is never held in memory.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines = 1
    with open_regular(path) as raw:
        while chunk := raw.read(_CHUNK):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.object is what the decoder saw: its buffered bytes, BOM stripped.
                return lines + bytes(exc.object).count(b"\n", 0, exc.start)
            _refuse_nul(path.name, text, first_line=lines)
            lines += text.count("\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return lines
    return None


def _refuse_nul(name: str, text: str, *, first_line: int) -> None:
    """Raise CsvFileError when the text holds a NUL: binary, or UTF-16 without a BOM."""
    nul = text.find("\x00")
    if nul >= 0:
        line = first_line + text.count("\n", 0, nul)
        why = f"not a CSV: line {line} contains NUL bytes (binary, or UTF-16 without a BOM?)"
        raise CsvFileError(name, f"{why}; {_EXPORT_HINT}", line=line)


def detect_delimiter(path: Path, encoding: str) -> str:
    """Return the delimiter: csv.Sniffer on the first lines, checked against the header line."""
    with _open_text(path, encoding) as stream:
        sample = stream.read(_SAMPLE_CHARS)
        if stream.read(1):  # cut a partial last line off so the sniffer sees whole lines
            sample = sample[: sample.rfind("\n") + 1] or sample
    header_line = _unquoted(next((ln for ln in sample.splitlines() if ln.strip()), ""))
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        sniffed = ""
    # The sniffer weighs every line and can be fooled by data; the header line has no excuse.
    if sniffed and sniffed in _DELIMITERS and sniffed in header_line:
        return sniffed
    counts = {delimiter: header_line.count(delimiter) for delimiter in _DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def _unquoted(line: str) -> str:
    """Return a line without its quoted parts, so delimiters inside quotes are not counted."""
    return re.sub(r'"[^"]*"', "", line)


# --------------------------------------------------------------------------- the email column


def _header_key(name: str) -> str:
    """Return a header compared loosely: case, accents, spaces, _ - . and a BOM ignored."""
    plain = unicodedata.normalize("NFKD", name.replace("\ufeff", "")).casefold()
    plain = "".join(char for char in plain if not unicodedata.combining(char))
    return re.sub(r"[\s_\-.]+", "", plain)


_EMAIL_KEYS = tuple(dict.fromkeys(_header_key(name) for name in _EMAIL_HEADERS))


def find_email_column(
    file_name: str, first: list[str], configured: str | None
) -> tuple[tuple[str, ...], int]:
    """Return (header, email column index) from the first record; () for a headerless list."""
    header = tuple(first)
    if configured is not None:
        wanted = configured.strip().casefold()
        for index, name in enumerate(header):
            if name.strip().casefold() == wanted:
                return header, index
        why = f"email column {configured!r} not found among the header's {_columns(header)}"
        raise CsvFileError(file_name, f"{why}; fix email_column or the file's header row")
    index = email_column_index(header)
    if index is not None:
        return header, index
    if len(header) == 1 and "@" in header[0]:
        return (), 0
    raise CsvFileError(file_name, _no_email_column(header))


def email_column_index(header: tuple[str, ...]) -> int | None:
    """Return the email column: a known name (by priority), else a header ending in "email".

    mailprobe_* columns never count: a verified file dropped again keeps its address column.
    """
    keys = [
        "" if name.strip().lower().startswith(_FIELD_PREFIX) else _header_key(name)
        for name in header
    ]
    for known in _EMAIL_KEYS:
        if known in keys:
            return keys.index(known)
    # "Work Email", "Primary Email Address": leftmost wins when nothing is named plainly.
    for index, key in enumerate(keys):
        if key.endswith(("email", "emailaddress")):
            return index
    return None


def _no_email_column(header: tuple[str, ...]) -> str:
    """Return the message for a file without an email column: what we looked for and the fix."""
    looked = ", ".join(_EMAIL_HEADERS[:8])
    return (
        f"no email column found (looked for headers {looked}, ... in any case, or one ending"
        f" in 'email'; the header row has {_columns(header)}); rename the address column to"
        " 'email' or set email_column"
    )


def _columns(header: tuple[str, ...]) -> str:
    """Return how many columns a header has, for a message: never the cells themselves, so a
    failure note cannot leak the contents of a file that was not meant to be read."""
    return f"{len(header)} column{'s' if len(header) != 1 else ''}"


# --------------------------------------------------------------------------- writing


@contextmanager
def _atomic_text(out: Path, *, encoding: str) -> Iterator[TextIO]:
    """Yield a text stream whose content replaces `out` whole on success, never partly.

    The temp file is a dot-file beside `out` (same file system, so os.replace is atomic, and
    ignored by anyone listing the folder for results); it is fsynced before the rename and the
    folder after it, so a crash leaves the old file or the new one, never a torn one.
    """
    temp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 so the umask decides permissions, as for any file a user creates.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding=encoding, newline="") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, out)
    except BaseException:
        with suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_folder(out.parent)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so a rename survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
