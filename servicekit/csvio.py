"""CSV in and out of the services: records parsed from a byte stream in bounded memory, and cells written
safe to open in a spreadsheet.

Export neutralises formula injection as OWASP recommends: a cell starting with ``=``, ``+``, ``-``, ``@``, tab
or carriage return gets a leading apostrophe, so a spreadsheet shows it as text instead of evaluating it. Import
takes that apostrophe off again, so what was exported imports as it was.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LIST_SEPARATOR = ";"


def neutralise(cell: str) -> str:
    """The cell as text a spreadsheet will not evaluate (OWASP CSV injection)."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def restore(cell: str) -> str:
    """The cell as it was before ``neutralise`` (an apostrophe before a formula start is taken off)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def csv_line(cells: Iterable[str]) -> str:
    """One record, quoted where needed (RFC 4180, CRLF line end), every cell neutralised."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([neutralise(cell) for cell in cells])
    return buffer.getvalue()


class CsvTooLong(ValueError):
    """A record longer than the limit: usually a quote opened and never closed."""


@dataclass(frozen=True)
class Record:
    """One CSV record and the line it starts on (the header is line 1, as a spreadsheet numbers rows)."""

    line: int
    cells: list[str]


async def records(
    chunks: AsyncIterable[bytes], *, max_record_chars: int = 65_536, batch_chars: int = 131_072
) -> AsyncIterator[list[Record]]:
    """Batches of records parsed from UTF-8 bytes (a BOM is skipped) as they arrive.

    Memory is bounded by ``batch_chars`` plus one record: text is cut only where a record ends (a line end
    outside quotes, found by quote parity), and each batch is parsed on its own. Raises ``UnicodeDecodeError``
    on bytes that are not UTF-8, ``CsvTooLong`` for a record over ``max_record_chars`` and ``csv.Error`` for
    a NUL character."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    partial = ""  # text after the last line end received
    record: list[str] = []  # lines of a record still inside a quoted cell
    record_chars = 0
    batch: list[str] = []  # lines of complete records not yet parsed
    batch_size = 0
    in_quotes = False
    line = 1  # the line the batch's first record starts on

    def parse(text: str, first_line: int) -> tuple[list[Record], int]:
        found: list[Record] = []
        reader = csv.reader(io.StringIO(text, newline=""))
        current = first_line
        for cells in reader:
            found.append(Record(line=current, cells=cells))
            current = first_line + reader.line_num
        return found, first_line + text.count("\n")

    def too_long() -> CsvTooLong:
        starts = line + sum(part.count("\n") for part in batch)
        return CsvTooLong(
            f"The record starting on line {starts} is longer than {max_record_chars} characters"
            " (a quote opened and never closed?)."
        )

    async def text_of() -> AsyncIterator[str]:
        async for chunk in chunks:
            if chunk:
                yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True) + "\n"

    async for text in text_of():
        lines = (partial + text).split("\n")
        partial = lines.pop()
        for each in lines:
            record.append(each + "\n")
            record_chars += len(each) + 1
            # A record ends at a line end outside quotes: an odd number of quotes on a line opens or closes one.
            if each.count('"') % 2:
                in_quotes = not in_quotes
            if not in_quotes:
                batch.extend(record)
                batch_size += record_chars
                record, record_chars = [], 0
            elif record_chars > max_record_chars:
                raise too_long()
        if record_chars + len(partial) > max_record_chars:
            raise too_long()
        if batch_size >= batch_chars:
            found, line = parse("".join(batch), line)
            batch, batch_size = [], 0
            yield found
    if in_quotes:
        raise CsvTooLong(f"The record starting on line {line} ends inside a quoted cell.")
    found = [r for r in parse("".join(batch), line)[0] if r.cells]
    if found:
        yield found
