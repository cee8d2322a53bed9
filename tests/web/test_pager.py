"""The list's pager: which page numbers it links, which is current, what it says is shown."""

from __future__ import annotations

from typing import Any

from callrec.catalog import SearchPage
from callrec.web.pages.recordings import _pager


def page(*, total: int | None, offset: int | None, items: int, **kw: Any) -> SearchPage:
    return SearchPage(
        items=[object()] * items,  # type: ignore[list-item]  # the pager only counts them
        next_cursor=kw.get("next_cursor"),
        prev_cursor=kw.get("prev_cursor"),
        total=total,
        total_exact=kw.get("exact", True),
        offset=offset,
    )


def test_numbers_around_the_current_page_with_gaps() -> None:
    pager = _pager(page(total=230, offset=100, items=25, next_cursor="n", prev_cursor="p"), {}, 25)
    assert pager.numbers == [1, None, 3, 4, 5, 6, 7, None, 10]
    assert pager.current == 5 and pager.shown == "101\u2013125 of 230"
    assert pager.urls[1] == "/recordings" and pager.urls[10] == "/recordings?page=10"
    assert pager.next_url == "/recordings?cursor=n" and pager.prev_url == "/recordings?cursor=p"


def test_filters_stay_in_every_link() -> None:
    pager = _pager(page(total=60, offset=0, items=25, next_cursor="n"), {"q": "a b"}, 25)
    assert pager.numbers == [1, 2, 3] and pager.current == 1 and pager.prev_url == ""
    assert pager.urls[2] == "/recordings?q=a+b&page=2"
    assert pager.next_url == "/recordings?q=a+b&cursor=n"


def test_past_the_count_and_between_pages() -> None:
    capped = _pager(page(total=1000, offset=0, items=50, exact=False), {}, 50)
    assert capped.numbers == [1, 2, 3, None, 20, None] and capped.shown == "1\u201350 of 1,000+"
    # A jump to a date lands between page boundaries: no page is current, the range says it.
    between = _pager(page(total=60, offset=7, items=25), {}, 25)
    assert between.current == 0 and between.shown == "8\u201332 of 60"
    # Beyond the count, or not counted: previous and next only.
    unknown = _pager(page(total=1000, offset=None, items=50, exact=False), {}, 50)
    assert unknown.current == 0 and unknown.shown == ""
    single = _pager(page(total=3, offset=0, items=3), {}, 50)
    assert single.numbers == [] and single.shown == "1\u20133 of 3"
