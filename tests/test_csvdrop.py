"""The CSV drop folder: readiness, encodings, delimiters, email column, output, atomicity."""

from __future__ import annotations

import codecs
import csv
import io
import os
import tracemalloc
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from mailprobe.connectors.base import FieldValue
from mailprobe.connectors.csvdrop import (
    CsvFileError,
    CsvTable,
    DropFolder,
    format_value,
    neutralise,
)
from mailprobe.connectors.errors import SkippableRecordError
from mailprobe.connectors.fields import FIELD_NAMES

NOW = 1_800_000_000.0
FieldsForRow = Callable[[int, str], Mapping[str, FieldValue]]


@pytest.fixture
def drop(tmp_path: Path) -> DropFolder:
    folder = DropFolder(tmp_path / "drop", settle_s=5.0)
    folder.ensure_layout()
    return folder


def put(folder: DropFolder, name: str, content: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write a file into inbox/ as bytes (text is encoded as given, newlines kept)."""
    path = folder.inbox / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    os.utime(path, (NOW - 60, NOW - 60))
    return path


def read_output(path: Path) -> list[list[str]]:
    """Return the rows of an output file, which is always UTF-8 (BOM or not)."""
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))


def status_for(number: int, email: str) -> Mapping[str, FieldValue]:
    return {"mailprobe_status": "valid", "mailprobe_verified_email": email, "mailprobe_score": 90}


def write(drop: DropFolder, table: CsvTable, fields: FieldsForRow = status_for) -> list[list[str]]:
    """Write the table's output with `fields` and return its rows."""
    out = drop.output_path(table.path)
    table.write_verified(out, fields)
    return read_output(out)


def column(rows: list[list[str]], name: str) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


# --------------------------------------------------------------------------- the folder


def test_ensure_layout_creates_the_four_folders(tmp_path: Path) -> None:
    folder = DropFolder(tmp_path / "a" / "drop")
    folder.ensure_layout()
    folder.ensure_layout()  # twice is fine
    assert sorted(p.name for p in folder.folder.iterdir()) == [
        "archive",
        "failed",
        "inbox",
        "outbox",
    ]
    assert folder.inbox == tmp_path / "a" / "drop" / "inbox"
    assert folder.archive_dir.name == "archive" and folder.failed_dir.name == "failed"


def test_ready_files_waits_until_mtime_settled(drop: DropFolder) -> None:
    path = put(drop, "late.csv", "email\n")
    os.utime(path, (NOW - 4.5, NOW - 4.5))
    assert drop.ready_files(now=NOW) == []
    assert drop.ready_files(now=NOW + 0.6) == [path]


def test_ready_files_sorted_by_name_and_csv_case_insensitive(drop: DropFolder) -> None:
    b = put(drop, "b.CSV", "email\n")
    a = put(drop, "a.csv", "email\n")
    assert drop.ready_files(now=NOW) == [a, b]


def test_ready_files_ignores_part_dot_lock_other_files_and_folders(drop: DropFolder) -> None:
    for name in ("x.csv.part", ".x.csv", ".x.csv.1234.tmp", "~$x.csv", "x.txt", "x.xlsx"):
        put(drop, name, "email\n")
    (drop.inbox / "dir.csv").mkdir()
    assert drop.ready_files(now=NOW) == []


def test_ready_files_without_inbox_is_empty(tmp_path: Path) -> None:
    assert DropFolder(tmp_path / "nowhere").ready_files(now=NOW) == []


def test_open_of_missing_file_is_csv_file_error(drop: DropFolder) -> None:
    with pytest.raises(CsvFileError, match="cannot read the file"):
        drop.open(drop.inbox / "gone.csv")


def test_output_path_is_outbox_stem_verified_csv(drop: DropFolder) -> None:
    assert drop.output_path(drop.inbox / "Leads 2026.CSV") == (
        drop.outbox / "Leads 2026.verified.csv"
    )


def test_archive_moves_file_and_renames_on_clash(drop: DropFolder) -> None:
    first = drop.archive(put(drop, "leads.csv", "email\na@x.test\n"))
    second = drop.archive(put(drop, "leads.csv", "email\nb@x.test\n"))
    assert first == drop.archive_dir / "leads.csv"
    assert second == drop.archive_dir / "leads.2.csv"
    assert "a@x.test" in first.read_text() and "b@x.test" in second.read_text()
    assert list(drop.inbox.iterdir()) == []


def test_fail_moves_file_and_writes_error_txt_with_reason(drop: DropFolder) -> None:
    drop.fail(put(drop, "leads.csv", "x\n"), "first reason")
    target = drop.fail(put(drop, "leads.csv", "y\n"), "no email column found")
    assert target == drop.failed_dir / "leads.2.csv"
    note = (drop.failed_dir / "leads.2.csv.error.txt").read_text(encoding="utf-8")
    assert "leads.csv" in note and "no email column found" in note
    assert "first reason" in (drop.failed_dir / "leads.csv.error.txt").read_text()
    assert not [p for p in drop.failed_dir.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("encoding", "detected", "has_bom"),
    [
        ("utf-8", "utf-8", False),
        ("utf-8-sig", "utf-8-sig", True),
        ("utf-16", "utf-16", True),  # with BOM, native order
        ("utf-16-be-bom", "utf-16", True),
        ("latin-1", "cp1252", False),
    ],
)
def test_encoding_is_detected_and_text_survives(
    drop: DropFolder, encoding: str, detected: str, has_bom: bool
) -> None:
    text = "name,email\nJosé Müller,jose@x.test\nZoë,zoe@x.test\n"
    if encoding == "utf-16-be-bom":
        content = codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    else:
        content = text.encode(encoding)
    table = drop.open(put(drop, "enc.csv", content))
    assert (table.encoding, table.has_bom, table.header) == (detected, has_bom, ("name", "email"))
    assert list(table.rows()) == [(1, "jose@x.test"), (2, "zoe@x.test")]
    assert column(write(drop, table), "name") == ["José Müller", "Zoë"]


def test_cp1252_only_characters_are_read_as_cp1252(drop: DropFolder) -> None:
    table = drop.open(put(drop, "euro.csv", "email,price\na@x.test,5 €\n", encoding="cp1252"))
    assert table.encoding == "cp1252"
    assert column(write(drop, table), "price") == ["5 €"]


def test_bytes_undefined_in_cp1252_fall_back_to_latin_1(drop: DropFolder) -> None:
    table = drop.open(put(drop, "odd.csv", b"email,x\na@x.test,\x81\xe9\n"))
    assert table.encoding == "latin-1"
    assert column(write(drop, table), "x") == ["\x81é"]


@pytest.mark.parametrize(
    ("encoding", "bom"), [("utf-8", False), ("utf-8-sig", True), ("utf-16", True), ("cp1252", True)]
)
def test_output_is_utf8_with_bom_when_input_had_one_or_was_legacy(
    drop: DropFolder, encoding: str, bom: bool
) -> None:
    table = drop.open(put(drop, "b.csv", "email\né@x.test\n", encoding=encoding))
    out = drop.output_path(table.path)
    table.write_verified(out, status_for)
    data = out.read_bytes()
    assert data.startswith(codecs.BOM_UTF8) is bom
    assert "é@x.test".encode() in data


def test_invalid_utf8_after_utf8_bom_cannot_be_decoded(drop: DropFolder) -> None:
    path = put(drop, "bad.csv", codecs.BOM_UTF8 + b"email\na@x.test\n\xff@x.test\n")
    with pytest.raises(CsvFileError, match="cannot decode line 3 as UTF-8") as caught:
        drop.open(path)
    assert caught.value.line == 3


def test_odd_length_utf16_cannot_be_decoded(drop: DropFolder) -> None:
    path = put(drop, "bad.csv", "email\na@x.test\n".encode("utf-16") + b"\x00")
    with pytest.raises(CsvFileError, match="cannot decode"):
        drop.open(path)


@pytest.mark.parametrize(
    "content",
    [b"", codecs.BOM_UTF8, b"\n\n  \r\n", "".encode("utf-16")],
    ids=["zero-bytes", "bom-only", "blank-lines", "utf16-bom-only"],
)
def test_empty_file_is_refused(drop: DropFolder, content: bytes) -> None:
    with pytest.raises(CsvFileError, match="^file is empty$"):
        drop.open(put(drop, "empty.csv", content))


def test_nul_bytes_are_not_a_csv_with_line(drop: DropFolder) -> None:
    path = put(drop, "nul.csv", b"email\na@x.test\nb@x\x00.test\n")
    with pytest.raises(CsvFileError, match="not a CSV: line 3 contains NUL") as caught:
        drop.open(path)
    assert caught.value.line == 3


def test_utf16_without_bom_is_not_a_csv(drop: DropFolder) -> None:
    with pytest.raises(CsvFileError, match="UTF-16 without a BOM"):
        drop.open(put(drop, "u.csv", "email\na@x.test\n".encode("utf-16-le")))


def test_excel_workbook_renamed_csv_is_not_a_csv(drop: DropFolder) -> None:
    with pytest.raises(CsvFileError, match=r"not a CSV: it is an Excel workbook \(.xlsx\)"):
        drop.open(put(drop, "book.csv", b"PK\x03\x04\x14\x00\x06\x00rest"))


# --------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected_and_kept_in_output(drop: DropFolder, delimiter: str) -> None:
    lines = [["id", "name", "email"], ["1", "Ann", "ann@x.test"], ["2", "Bob", "bob@x.test"]]
    text = "".join(delimiter.join(cells) + "\n" for cells in lines)
    table = drop.open(put(drop, "d.csv", text))
    assert (table.delimiter, table.email_index) == (delimiter, 2)
    assert [email for _, email in table.rows()] == ["ann@x.test", "bob@x.test"]
    out = drop.output_path(table.path)
    table.write_verified(out, status_for)
    assert out.read_text(encoding="utf-8").splitlines()[1].startswith(f"1{delimiter}Ann")


def test_semicolon_file_with_commas_inside_quotes_is_semicolon(drop: DropFolder) -> None:
    text = 'name;email;note\n"Doe, Jane";jane@x.test;"a, b, c"\n"Roe, R";r@x.test;x\n'
    table = drop.open(put(drop, "s.csv", text))
    assert table.delimiter == ";"
    assert list(table.rows()) == [(1, "jane@x.test"), (2, "r@x.test")]


def test_single_column_file_uses_comma(drop: DropFolder) -> None:
    table = drop.open(put(drop, "one.csv", "Email\na@x.test\nb@x.test\n"))
    assert (table.delimiter, table.header, table.email_index) == (",", ("Email",), 0)


# --------------------------------------------------------------------------- email column


@pytest.mark.parametrize(
    "header",
    [
        "email",
        "EMAIL",
        " E-Mail ",
        "Email Address",
        "e_mail_address",
        "E-Mail-Adresse",
        "Courriel",
        "correo electrónico",
        "Mail",
        "Work Email",
    ],
)
def test_email_column_found_by_header_variant(drop: DropFolder, header: str) -> None:
    table = drop.open(put(drop, "h.csv", f"id,{header},city\n1,a@x.test,Paris\n"))
    assert table.email_index == 1
    assert list(table.rows()) == [(1, "a@x.test")]


def test_plain_email_header_beats_work_email_and_mail(drop: DropFolder) -> None:
    table = drop.open(put(drop, "h.csv", "Work Email,Mail,Email\nw@x.test,m@x.test,e@x.test\n"))
    assert table.email_index == 2


def test_mailprobe_columns_are_never_the_email_column(drop: DropFolder) -> None:
    text = "mailprobe_verified_email,Contact Email\nold@x.test,new@x.test\n"
    assert drop.open(put(drop, "h.csv", text)).email_index == 1


def test_configured_email_column_is_matched_case_insensitively(tmp_path: Path) -> None:
    folder = DropFolder(tmp_path, email_column="Adresse Pro")
    folder.ensure_layout()
    table = folder.open(put(folder, "c.csv", "email,adresse pro\nhome@x.test,pro@x.test\n"))
    assert list(table.rows()) == [(1, "pro@x.test")]


def test_configured_email_column_absent_is_an_error_naming_it(tmp_path: Path) -> None:
    folder = DropFolder(tmp_path, email_column="Adresse Pro")
    folder.ensure_layout()
    with pytest.raises(CsvFileError, match="'Adresse Pro' not found among the header's 2 columns"):
        folder.open(put(folder, "c.csv", "email,name\na@x.test,A\n"))


def test_no_email_column_is_csv_file_error_and_fail_explains(drop: DropFolder) -> None:
    path = put(drop, "people.csv", "name,phone\nAnn,123\n")
    with pytest.raises(CsvFileError) as caught:
        drop.open(path)
    error = caught.value
    assert isinstance(error, SkippableRecordError) and error.external_id == "people.csv"
    assert str(error).startswith("no email column found (looked for headers email, e-mail")
    assert "2 columns" in str(error) and "set email_column" in str(error)
    assert "phone" not in str(error)  # a note never quotes the file's contents
    target = drop.fail(path, str(error))
    assert target == drop.failed_dir / "people.csv" and not path.exists()
    note = (drop.failed_dir / "people.csv.error.txt").read_text(encoding="utf-8")
    assert str(error) in note


def test_headerless_single_column_list_gets_a_header_in_output(drop: DropFolder) -> None:
    table = drop.open(put(drop, "list.csv", "a@x.test\n\nb@x.test\n"))
    assert (table.header, table.has_header, table.email_index) == ((), False, 0)
    assert list(table.rows()) == [(1, "a@x.test"), (2, "b@x.test")]
    rows = write(drop, table)
    assert rows[0] == ["email", *FIELD_NAMES]
    assert [row[0] for row in rows[1:]] == ["a@x.test", "b@x.test"]


# --------------------------------------------------------------------------- rows


def test_rows_are_numbered_from_one_skipping_blank_lines_only(drop: DropFolder) -> None:
    text = "email,name\n\n a@x.test ,A\n   \n,\n,,,\nb@x.test,B\n"
    table = drop.open(put(drop, "r.csv", text))
    expected = [(1, "a@x.test"), (2, ""), (3, ""), (4, "b@x.test")]
    assert list(table.rows()) == expected
    seen: list[tuple[int, str]] = []

    def record(number: int, email: str) -> Mapping[str, FieldValue]:
        seen.append((number, email))
        return {}

    assert table.write_verified(drop.output_path(table.path), record) == 4
    assert seen == expected


def test_ragged_rows_keep_every_cell_and_columns_stay_aligned(drop: DropFolder) -> None:
    text = "id,name,email\n1\n2,Bob,bob@x.test,extra1,extra2\n3,Cy,cy@x.test\n"
    table = drop.open(put(drop, "r.csv", text))
    assert list(table.rows()) == [(1, ""), (2, "bob@x.test"), (3, "cy@x.test")]
    rows = write(drop, table)
    width = 3 + len(FIELD_NAMES)
    assert rows[1][:3] == ["1", "", ""] and len(rows[1]) == width
    assert rows[2][:3] == ["2", "Bob", "bob@x.test"] and rows[2][width:] == ["extra1", "extra2"]
    assert column(rows, "mailprobe_verified_email") == ["", "bob@x.test", "cy@x.test"]


def test_quoted_fields_with_newlines_and_delimiters_round_trip(drop: DropFolder) -> None:
    text = 'note,email\n"line one\nline two, with comma",a@x.test\n"say ""hi""; ok",b@x.test\n'
    table = drop.open(put(drop, "q.csv", text))
    assert list(table.rows()) == [(1, "a@x.test"), (2, "b@x.test")]
    rows = write(drop, table)
    assert column(rows, "note") == ["line one\nline two, with comma", 'say "hi"; ok']


def test_unterminated_quote_at_eof_is_csv_file_error_with_line(drop: DropFolder) -> None:
    table = drop.open(put(drop, "u.csv", 'email,note\na@x.test,ok\nb@x.test,"never closed\nc\n'))
    rows = table.rows()
    assert next(rows) == (1, "a@x.test")
    with pytest.raises(CsvFileError, match="not a CSV: line 3: a quoted field") as caught:
        next(rows)
    assert caught.value.line == 3 and caught.value.external_id == "u.csv"


def test_text_after_closing_quote_is_csv_file_error(drop: DropFolder) -> None:
    table = drop.open(put(drop, "u.csv", 'email,note\na@x.test,"x"y\n'))
    with pytest.raises(CsvFileError, match="line 2: a closing quote is followed"):
        list(table.rows())


# --------------------------------------------------------------------------- output


def test_output_keeps_every_row_in_order_with_fields_appended(drop: DropFolder) -> None:
    emails = [f"user{i}@x.test" for i in range(50)]
    text = "id,email,city\n" + "".join(f"{i},{e},Paris\n" for i, e in enumerate(emails))
    table = drop.open(put(drop, "o.csv", text))
    out = drop.output_path(table.path)
    assert table.write_verified(out, status_for) == 50
    rows = read_output(out)
    assert rows[0] == ["id", "email", "city", *FIELD_NAMES]
    assert [row[:3] for row in rows[1:]] == [[str(i), e, "Paris"] for i, e in enumerate(emails)]
    assert column(rows, "mailprobe_verified_email") == emails
    assert set(column(rows, "mailprobe_status")) == {"valid"}
    assert set(column(rows, "mailprobe_reason")) == {""}  # absent from the mapping


def test_output_of_header_only_file_is_header_only(drop: DropFolder) -> None:
    table = drop.open(put(drop, "h.csv", "email\n"))
    out = drop.output_path(table.path)
    assert table.write_verified(out, status_for) == 0
    assert read_output(out) == [["email", *FIELD_NAMES]]


def test_field_values_are_formatted_for_csv() -> None:
    assert format_value(None) == ""
    assert (format_value(True), format_value(False)) == ("true", "false")
    assert format_value(datetime(2026, 11, 27, 12, 0, tzinfo=UTC)) == "2026-11-27T12:00:00Z"
    assert format_value(datetime(2026, 11, 27, 12, 0)) == "2026-11-27T12:00:00Z"
    assert format_value(date(2026, 12, 27)) == "2026-12-27"
    assert (format_value(98), format_value(0)) == ("98", "0")
    assert format_value("catch_all") == "catch_all"


def test_verified_file_dropped_again_updates_its_mailprobe_columns(drop: DropFolder) -> None:
    text = "email,mailprobe_status,note\na@x.test,invalid,keep\nb@x.test,unknown,keep\n"
    table = drop.open(put(drop, "again.csv", text))

    def only_a(number: int, email: str) -> Mapping[str, FieldValue]:
        return {"mailprobe_status": "valid"} if number == 1 else {}

    out = drop.output_path(table.path)
    table.write_verified(out, only_a)
    rows = read_output(out)
    assert rows[0].count("mailprobe_status") == 1 and rows[0][:3] == text.split("\n")[0].split(",")
    assert column(rows, "mailprobe_status") == ["valid", "unknown"]
    assert column(rows, "note") == ["keep", "keep"]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-12.5", "-12.5"),
        ("+33", "+33"),
        ("1,234.5", "1,234.5"),
        ("-", "'-"),
        ("a=1", "a=1"),
        ("", ""),
    ],
)
def test_neutralise_prefixes_formulas_but_not_plain_numbers(cell: str, written: str) -> None:
    assert neutralise(cell) == written


def test_formula_injection_is_neutralised_in_original_and_mailprobe_cells(
    drop: DropFolder,
) -> None:
    text = 'email,=HEADER,amount\n"=HYPERLINK(""http://evil.test"")@x.test",@SUM(A1),-12.5\n'
    table = drop.open(put(drop, "f.csv", text))

    def evil(number: int, email: str) -> Mapping[str, FieldValue]:
        return {"mailprobe_smtp_reply": "=cmd|' /C calc'!A0", "mailprobe_score": -1}

    rows = write(drop, table, evil)
    assert rows[0][1] == "'=HEADER"
    assert rows[1][:3] == ['\'=HYPERLINK("http://evil.test")@x.test', "'@SUM(A1)", "-12.5"]
    assert column(rows, "mailprobe_smtp_reply") == ["'=cmd|' /C calc'!A0"]
    assert column(rows, "mailprobe_score") == ["-1"]


# --------------------------------------------------------------------------- atomic write


def test_output_is_invisible_until_complete_temp_is_a_dot_file(drop: DropFolder) -> None:
    table = drop.open(put(drop, "a.csv", "email\na@x.test\nb@x.test\n"))
    out = drop.output_path(table.path)
    during: list[tuple[bool, list[str]]] = []

    def look(number: int, email: str) -> Mapping[str, FieldValue]:
        during.append((out.exists(), [p.name for p in drop.outbox.iterdir()]))
        return {}

    assert table.write_verified(out, look) == 2
    assert len(during) == 2
    for exists, names in during:
        assert not exists
        assert len(names) == 1 and names[0].startswith(".a.verified.csv.")
    assert [p.name for p in drop.outbox.iterdir()] == ["a.verified.csv"]


def test_exception_in_fields_for_row_leaves_no_output_and_no_temp(drop: DropFolder) -> None:
    table = drop.open(put(drop, "a.csv", "email\na@x.test\nb@x.test\n"))

    def boom(number: int, email: str) -> Mapping[str, FieldValue]:
        if number == 2:
            raise RuntimeError("store went away")
        return {}

    with pytest.raises(RuntimeError, match="store went away"):
        table.write_verified(drop.output_path(table.path), boom)
    assert list(drop.outbox.iterdir()) == []


def test_failed_rewrite_keeps_previous_output_whole(drop: DropFolder) -> None:
    table = drop.open(put(drop, "a.csv", "email\na@x.test\nb@x.test\n"))
    out = drop.output_path(table.path)
    table.write_verified(out, status_for)
    before = out.read_bytes()

    def boom(number: int, email: str) -> Mapping[str, FieldValue]:
        raise RuntimeError("late")

    with pytest.raises(RuntimeError):
        table.write_verified(out, boom)
    assert out.read_bytes() == before
    assert [p.name for p in drop.outbox.iterdir()] == ["a.verified.csv"]


def test_broken_csv_while_writing_leaves_no_output(drop: DropFolder) -> None:
    table = drop.open(put(drop, "a.csv", 'email\na@x.test\n"b@x.test\n'))
    with pytest.raises(CsvFileError, match="never closed"):
        table.write_verified(drop.output_path(table.path), status_for)
    assert list(drop.outbox.iterdir()) == []


# --------------------------------------------------------------------------- memory


def test_200k_rows_stream_in_bounded_memory(drop: DropFolder) -> None:
    path = drop.inbox / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as stream:
        stream.write("id,email\n")
        for start in range(0, 200_000, 10_000):
            stream.write(
                "".join(
                    f"{i},person{i}@example{i % 97}.test\n" for i in range(start, start + 10_000)
                )
            )
    os.utime(path, (NOW - 60, NOW - 60))
    fields = {"mailprobe_status": "valid", "mailprobe_score": 95, "mailprobe_free": False}

    tracemalloc.start()
    try:
        table = drop.open(path)
        count = sum(1 for _ in table.rows())
        written = table.write_verified(drop.output_path(path), lambda number, email: fields)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (count, written) == (200_000, 200_000)
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_ensure_layout_removes_outputs_a_killed_pass_left_half_written(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    drop.ensure_layout()
    stale = drop.outbox / ".leads.verified.csv.1a2b3c4d.tmp"
    stale.write_text("email,mailprobe_status\nhalf")
    kept = drop.outbox / "leads.verified.csv"
    kept.write_text("email\n")
    drop.ensure_layout()
    assert not stale.exists()
    assert kept.exists()
