"""The WGA catalog: both historical formats, Latin-1, quirky rows, URLs, names, selection, cache."""

from __future__ import annotations

import pytest
from wga_server import Art, FakeWga, catalog_csv, catalog_zip, sample_artworks

from wga.data.catalog import (
    Artwork,
    Selection,
    author_list,
    decode_catalog,
    fetch_catalog,
    find_image_link,
    load_catalog,
    parse_catalog,
    parse_retry_after,
    read_catalog,
    select,
)
from wga.errors import InvalidInput, NotFound


def parse(data: bytes):
    return parse_catalog(decode_catalog(data))


def test_comma_catalog_keeps_embedded_commas_semicolons_quotes_and_latin1():
    catalog = parse(catalog_csv(sample_artworks(), delimiter=","))
    assert catalog.delimiter == ","
    assert not catalog.problems
    aachen = catalog.records[0]
    assert aachen.author == "AACHEN, Hans von"
    assert aachen.born_died == "(b. 1552, Köln, d. 1615, Praha)"
    assert aachen.location == "Fogg Art Museum, Harvard University, Cambridge"
    assert aachen.technique == "Oil on canvas, 68 x 95 cm"
    cezanne = next(r for r in catalog.records if r.author.startswith("C\u00c9ZANNE"))
    assert cezanne.title == 'The "Card Players"; second version'
    assert cezanne.technique == "Oil on canvas; 47 x 57 cm"
    assert {r.author for r in catalog.records} >= {"DÜRER, Albrecht", "CÉZANNE, Paul"}


def test_semicolon_catalog_gives_the_same_records_as_the_comma_one():
    arts = sample_artworks()
    new = parse(catalog_csv(arts, delimiter=",", host="https://www.wga.hu"))
    old = parse(catalog_csv(arts, delimiter=";", host="http://www.wga.hu"))
    assert old.delimiter == ";"
    rows_new = [{**r.as_row(), "URL": r.page_path} for r in new.records]
    rows_old = [{**r.as_row(), "URL": r.page_path} for r in old.records]
    assert rows_old == rows_new


def test_catalog_bytes_are_latin1_not_utf8():
    data = catalog_csv(sample_artworks()[:1])
    assert b"K\xf6ln" in data  # what the WGA really ships
    assert parse(data).records[0].born_died.startswith("(b. 1552, Köln")


def test_a_utf8_resaved_catalog_is_read_too():
    text = catalog_csv(sample_artworks()[:1]).decode("latin-1")
    assert parse(text.encode("utf-8")).records[0].born_died.startswith("(b. 1552, Köln")


def test_blank_and_short_rows_are_reported_not_fatal():
    catalog = parse(catalog_csv(sample_artworks(), delimiter=";", quirks=True))
    assert len(catalog.records) == len(sample_artworks())
    assert catalog.blank_lines == 1
    assert len(catalog.problems) == 1
    assert "no URL" in str(catalog.problems[0])
    assert "line 5" in str(catalog.problems[0])


def test_row_with_fewer_fields_keeps_what_it_has_and_is_reported():
    text = (
        "AUTHOR,BORN-DIED,TITLE,DATE,TECHNIQUE,LOCATION,URL,FORM,TYPE,SCHOOL,TIMEFRAME\r\n"
        '"X, Y",,T,,,,https://www.wga.hu/html/x/y/t.html,painting\r\n'
    )
    catalog = parse_catalog(text)
    assert catalog.records[0].form == "painting"
    assert catalog.records[0].timeframe == ""
    assert "short row" in str(catalog.problems[0])


def test_a_file_that_is_not_a_catalog_is_a_clear_error():
    with pytest.raises(InvalidInput, match="does not look like a WGA catalog"):
        parse_catalog("<html><body>Service unavailable</body></html>\n")


def test_image_url_rewrites_html_to_art_and_joins_the_base_url():
    record = parse(catalog_csv(sample_artworks()[:1], host="http://www.wga.hu")).records[0]
    assert record.image_path == "/art/a/aachen/adonis.jpg"
    assert record.image_url() == "https://www.wga.hu/art/a/aachen/adonis.jpg"
    assert record.image_url("http://127.0.0.1:9/mirror/") == (
        "http://127.0.0.1:9/mirror/art/a/aachen/adonis.jpg"
    )
    assert record.page_url("http://127.0.0.1:9") == "http://127.0.0.1:9/html/a/aachen/adonis.html"


def test_colliding_basenames_get_distinct_file_names():
    catalog = parse(catalog_csv(sample_artworks()))
    names = [r.file_name for r in catalog.records]
    assert len(set(names)) == len(names)
    assert "a__aachen__adonis.jpg" in names and "b__bassano__adonis.jpg" in names


def test_file_names_are_safe_even_for_odd_paths():
    fields = dict.fromkeys(
        ("author", "born_died", "title", "date", "technique", "location"), ""
    ) | dict.fromkeys(("form", "type", "school", "timeframe"), "")
    one = Artwork(url="https://www.wga.hu/html/x/y/a b.html", **fields)
    two = Artwork(url="https://www.wga.hu/html/x/y/a%b.html", **fields)
    assert one.file_name != two.file_name
    for name in (one.file_name, two.file_name):
        assert "/" not in name and " " not in name and name.endswith(".jpg")


def test_artwork_page_link_is_found_when_the_rewrite_fails():
    html = (
        '<html><a href="/index.html">Home</a><a href="../../preview/x.gif">x</a>'
        '<a href="/art/b/bosch/moved-moved.jpg"><img src="/detail/b/bosch/moved.jpg"></a></html>'
    )
    page = "http://127.0.0.1:9/html/b/bosch/moved.html"
    assert find_image_link(html, page) == "http://127.0.0.1:9/art/b/bosch/moved-moved.jpg"
    assert find_image_link("<html><img src='detail/a.jpg'></html>", page) == (
        "http://127.0.0.1:9/html/b/bosch/detail/a.jpg"
    )
    assert find_image_link("<html><p>nothing</p></html>", page) is None


@pytest.fixture(scope="module")
def catalog():
    return parse(catalog_csv(sample_artworks()))


def test_filters_are_case_insensitive_lists_combined_with_and(catalog):
    chosen = select(catalog, Selection(type=["Mythological", "GENRE"], school=["german"]))
    assert [r.title for r in chosen] == ["Venus and Adonis", "Venus and Adonis (detail)"]
    assert {r.form for r in select(catalog, Selection(form=["SCULPTURE"]))} == {"sculpture"}


def test_author_matches_surname_or_full_name_with_accents_folded(catalog):
    assert len(select(catalog, Selection(author=["aachen"]))) == 2
    assert len(select(catalog, Selection(author=author_list("AACHEN, Hans von;bosch")))) == 4
    assert [r.author for r in select(catalog, Selection(author=["durer"]))] == ["DÜRER, Albrecht"]


def test_timeframe_matches_with_or_without_zero_padding(catalog):
    assert [r.title for r in select(catalog, Selection(timeframe=["751-800"]))] == ["Madonna"]


def test_limit_caps_the_selection_in_catalog_order(catalog):
    chosen = select(catalog, Selection(form=["painting"], limit=3))
    assert [r.key for r in chosen] == ["a/aachen/adonis", "a/aachen/adonis1", "b/bassano/adonis"]


def test_a_misspelt_filter_value_names_the_closest_values(catalog):
    with pytest.raises(InvalidInput, match="did you mean portrait"):
        select(catalog, Selection(type=["portraits"]))


def test_rows_repeating_one_artwork_page_are_selected_once():
    arts = [*sample_artworks()[:2], sample_artworks()[0]]
    chosen = select(parse(catalog_csv(arts)), Selection())
    assert len(chosen) == 2


@pytest.mark.timeout(30)
def test_catalog_is_fetched_once_then_served_from_the_cache(tmp_path):
    with FakeWga() as server:
        first = fetch_catalog(server.catalog_url, tmp_path)
        again = load_catalog(server.catalog_url, tmp_path)
        assert server.hits["/database/download/data_txt.zip"] == 1
        assert len(again) == len(sample_artworks())
        fetch_catalog(server.catalog_url, tmp_path, refresh=True)
        assert server.hits["/database/download/data_txt.zip"] == 2
        assert first.is_file() and not list(tmp_path.glob("*.part"))
        old = load_catalog(server.old_catalog_url, tmp_path)
        assert old.delimiter == ";" and len(old) == len(sample_artworks())
        with pytest.raises(NotFound, match="404"):
            fetch_catalog(server.base_url + "/database/nothing.zip", tmp_path)


def test_a_local_zip_or_csv_path_works_as_catalog_url(tmp_path):
    data = catalog_csv([Art("A, B", "T", "a/b/t")])
    (tmp_path / "data_txt.zip").write_bytes(catalog_zip(data))
    (tmp_path / "catalog.csv").write_bytes(data)
    assert len(read_catalog(fetch_catalog(str(tmp_path / "data_txt.zip")))) == 1
    assert len(load_catalog(str(tmp_path / "catalog.csv"))) == 1
    with pytest.raises(NotFound):
        fetch_catalog(str(tmp_path / "nope.zip"))


def test_retry_after_is_read_as_seconds_or_http_date():
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past: go now
